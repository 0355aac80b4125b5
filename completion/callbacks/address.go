package callbacks

import (
	"errors"
	"fmt"
	"net/netip"
	"net/url"

	"github.com/tollgate/tollgate/completion"
)

// ErrForbiddenAddress: a callback would reach an address callbacks may not
// reach (unless allow_private_networks is on): one that the IANA
// special-purpose registries do not mark globally reachable, multicast,
// or space IANA has not allocated for global unicast.
var ErrForbiddenAddress = errors.New("callback address is not globally reachable")

// addressRange is one entry of the address table.
type addressRange struct {
	prefix netip.Prefix
	name   string
	// ref is where the entry comes from.
	ref string
	// global is the registry's "Globally Reachable" column: true entries
	// are exceptions inside a larger refused block.
	global bool
}

func entry(cidr, name, ref string, global bool) addressRange {
	return addressRange{prefix: netip.MustParsePrefix(cidr), name: name, ref: ref, global: global}
}

// specialRanges is the IANA IPv4 Special-Purpose Address Registry
// (https://www.iana.org/assignments/iana-ipv4-special-registry/) and the
// IANA IPv6 Special-Purpose Address Registry
// (https://www.iana.org/assignments/iana-ipv6-special-registry/), every
// entry, with its "Globally Reachable" column (N/A counts as not
// reachable), plus the blocks those registries leave to others: IPv4
// multicast (224.0.0.0/4, RFC 5771), IPv6 multicast (ff00::/8, RFC 4291)
// and the deprecated site-local fec0::/10 (RFC 3879). The longest prefix
// containing an address decides. IPv6 outside 2000::/3 (the only space the
// IANA IPv6 Address Space registry allocates to global unicast) is refused
// unless an entry here says otherwise (64:ff9b::/96).
var specialRanges = []addressRange{
	// IPv4 Special-Purpose Address Registry.
	entry("0.0.0.0/8", "this network", "RFC 791 §3.2", false),
	entry("0.0.0.0/32", "this host on this network", "RFC 1122 §3.2.1.3", false),
	entry("10.0.0.0/8", "private-use", "RFC 1918", false),
	entry("100.64.0.0/10", "shared address space (carrier-grade NAT; cloud metadata at 100.100.100.200)", "RFC 6598", false),
	entry("127.0.0.0/8", "loopback", "RFC 1122 §3.2.1.3", false),
	entry("169.254.0.0/16", "link-local (cloud metadata at 169.254.169.254)", "RFC 3927", false),
	entry("172.16.0.0/12", "private-use", "RFC 1918", false),
	entry("192.0.0.0/24", "IETF protocol assignments", "RFC 6890 §2.1", false),
	entry("192.0.0.0/29", "IPv4 service continuity prefix", "RFC 7335", false),
	entry("192.0.0.8/32", "IPv4 dummy address", "RFC 7600", false),
	entry("192.0.0.9/32", "Port Control Protocol anycast", "RFC 7723", true),
	entry("192.0.0.10/32", "TURN anycast", "RFC 8155", true),
	entry("192.0.0.170/32", "NAT64/DNS64 discovery", "RFC 8880, RFC 7050 §2.2", false),
	entry("192.0.0.171/32", "NAT64/DNS64 discovery", "RFC 8880, RFC 7050 §2.2", false),
	entry("192.0.2.0/24", "documentation (TEST-NET-1)", "RFC 5737", false),
	entry("192.31.196.0/24", "AS112-v4", "RFC 7535", true),
	entry("192.52.193.0/24", "AMT", "RFC 7450", true),
	entry("192.88.99.0/24", "deprecated (6to4 relay anycast)", "RFC 7526", false),
	entry("192.88.99.2/32", "6a44-relay anycast address", "RFC 6751", true),
	entry("192.168.0.0/16", "private-use", "RFC 1918", false),
	entry("198.18.0.0/15", "benchmarking", "RFC 2544", false),
	entry("198.51.100.0/24", "documentation (TEST-NET-2)", "RFC 5737", false),
	entry("203.0.113.0/24", "documentation (TEST-NET-3)", "RFC 5737", false),
	entry("240.0.0.0/4", "reserved", "RFC 1112 §4", false),
	entry("255.255.255.255/32", "limited broadcast", "RFC 8190, RFC 919 §7", false),
	// Not in the special-purpose registry: the multicast registry's block.
	entry("224.0.0.0/4", "multicast", "RFC 5771", false),

	// IPv6 Special-Purpose Address Registry.
	entry("::1/128", "loopback", "RFC 4291", false),
	entry("::/128", "unspecified", "RFC 4291", false),
	entry("::ffff:0:0/96", "IPv4-mapped", "RFC 4291", false),
	entry("64:ff9b::/96", "IPv4-IPv6 translation (NAT64 well-known prefix)", "RFC 6052", true),
	entry("64:ff9b:1::/48", "IPv4-IPv6 translation (local-use NAT64)", "RFC 8215", false),
	entry("100::/64", "discard-only", "RFC 6666", false),
	entry("100:0:0:1::/64", "dummy IPv6 prefix", "RFC 9780", false),
	entry("2001::/23", "IETF protocol assignments", "RFC 2928", false),
	entry("2001::/32", "Teredo", "RFC 4380, RFC 8190", false),
	entry("2001:1::1/128", "Port Control Protocol anycast", "RFC 7723", true),
	entry("2001:1::2/128", "TURN anycast", "RFC 8155", true),
	entry("2001:1::3/128", "DNS-SD service registration protocol anycast", "RFC 9665", true),
	entry("2001:2::/48", "benchmarking", "RFC 5180", false),
	entry("2001:3::/32", "AMT", "RFC 7450", true),
	entry("2001:4:112::/48", "AS112-v6", "RFC 7535", true),
	entry("2001:10::/28", "deprecated (previously ORCHID)", "RFC 4843", false),
	entry("2001:20::/28", "ORCHIDv2", "RFC 7343", true),
	entry("2001:30::/28", "drone remote ID protocol entity tags", "RFC 9374", true),
	entry("2001:db8::/32", "documentation", "RFC 3849", false),
	entry("2002::/16", "6to4", "RFC 3056", false),
	entry("2620:4f:8000::/48", "direct delegation AS112 service", "RFC 7534", true),
	entry("3fff::/20", "documentation", "RFC 9637", false),
	entry("5f00::/16", "segment routing (SRv6) SIDs", "RFC 9602", false),
	entry("fc00::/7", "unique-local", "RFC 4193, RFC 8190", false),
	entry("fe80::/10", "link-local unicast", "RFC 4291", false),
	// Not in the special-purpose registry.
	entry("fec0::/10", "site-local (deprecated)", "RFC 3879", false),
	entry("ff00::/8", "multicast", "RFC 4291", false),
}

var (
	globalUnicast6 = netip.MustParsePrefix("2000::/3")
	nat64          = netip.MustParsePrefix("64:ff9b::/96")
)

// lookupRange returns the longest entry of specialRanges containing a.
func lookupRange(a netip.Addr) (addressRange, bool) {
	var best addressRange
	found := false
	for _, r := range specialRanges {
		if r.prefix.Contains(a) && (!found || r.prefix.Bits() > best.prefix.Bits()) {
			best, found = r, true
		}
	}
	return best, found
}

// AddressError says why an address is refused.
type AddressError struct {
	Addr netip.Addr
	// Range is the refused block, Name its registry name, Ref its source.
	Range     netip.Prefix
	Name, Ref string
	// Embeds is the IPv4 address a NAT64 address carries, when that is
	// what is refused.
	Embeds netip.Addr
}

func (e *AddressError) Error() string {
	if e.Embeds.IsValid() {
		return fmt.Sprintf("%s embeds %s (NAT64, RFC 6052), which is in %s (%s, %s): %s", e.Addr, e.Embeds, e.Range, e.Name, e.Ref, ErrForbiddenAddress)
	}
	if !e.Range.IsValid() {
		return fmt.Sprintf("%s is %s (%s): %s", e.Addr, e.Name, e.Ref, ErrForbiddenAddress)
	}
	return fmt.Sprintf("%s is in %s (%s, %s): %s", e.Addr, e.Range, e.Name, e.Ref, ErrForbiddenAddress)
}

func (e *AddressError) Unwrap() error { return ErrForbiddenAddress }

// CheckAddress reports whether a callback may be sent to a: nil, or an
// *AddressError (wrapping ErrForbiddenAddress) that names the range and
// its source. An address in the NAT64 well-known prefix is checked as the
// IPv4 address it embeds; every other IPv4 embedding (IPv4-mapped, 6to4,
// Teredo) lies in a block the registry does not mark reachable, so all of
// them, whatever they embed, are refused.
func CheckAddress(a netip.Addr) error {
	if !a.IsValid() {
		return &AddressError{Addr: a, Name: "invalid address", Ref: "-"}
	}
	a = a.WithZone("")
	r, found := lookupRange(a)
	switch {
	case found && !r.global:
		return &AddressError{Addr: a, Range: r.prefix, Name: r.name, Ref: r.ref}
	case found && r.prefix == nat64:
		b := a.As16()
		v4 := netip.AddrFrom4([4]byte{b[12], b[13], b[14], b[15]})
		var inner *AddressError
		if err := CheckAddress(v4); errors.As(err, &inner) {
			inner.Addr, inner.Embeds = a, v4
			return inner
		}
		return nil
	case found:
		return nil
	case a.Is6() && !globalUnicast6.Contains(a):
		return &AddressError{Addr: a, Name: "outside 2000::/3, the only block allocated for global unicast", Ref: "IANA IPv6 Address Space registry"}
	}
	return nil
}

// CheckURL is the one rule for a callback URL, applied when a request
// names it (handlers) and again before it is sent: the syntax of
// completion.ValidateCallbackURL, and, unless allowPrivate, a host written
// as an address must pass CheckAddress. A host name is checked on every
// address it is dialled at (NewClient), since what it resolves to can
// change between the request and the callback.
func CheckURL(raw string, allowPrivate bool) error {
	if err := completion.ValidateCallbackURL(raw); err != nil {
		return err
	}
	if allowPrivate {
		return nil
	}
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("callback_url: %w", err)
	}
	host := u.Hostname()
	a, err := netip.ParseAddr(host)
	if err != nil {
		return nil // a name: checked when dialled
	}
	if err := CheckAddress(a); err != nil {
		return fmt.Errorf("callback_url: %w", err)
	}
	return nil
}

// forbiddenReason is the error recorded for a refused callback: the range
// and its source, never the URL.
func forbiddenReason(err error) string {
	var ae *AddressError
	if errors.As(err, &ae) {
		return ae.Error()
	}
	return ErrForbiddenAddress.Error()
}
