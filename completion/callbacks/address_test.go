package callbacks

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// lastAddr is the last address of p.
func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 1 << (7 - i%8)
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

// TestEveryRefusedRangeIsRefusedAtBothEnds checks the first and the last
// address of every entry the table does not mark globally reachable, and
// that the first and last of every globally reachable one pass (NAT64,
// whose ends embed 0.0.0.0 and 255.255.255.255, is checked below).
func TestEveryRefusedRangeIsRefusedAtBothEnds(t *testing.T) {
	t.Parallel()
	for _, r := range specialRanges {
		for _, a := range []netip.Addr{r.prefix.Addr(), lastAddr(r.prefix)} {
			err := CheckAddress(a)
			switch {
			case r.prefix == nat64:
			case r.global && err != nil:
				t.Errorf("%s (%s, %s, globally reachable): refused: %v", a, r.prefix, r.name, err)
			case !r.global && !errors.Is(err, ErrForbiddenAddress):
				t.Errorf("%s (%s, %s): allowed, want refused", a, r.prefix, r.name)
			}
		}
	}
}

func TestAddressesNamedInTheIssue(t *testing.T) {
	t.Parallel()
	refused := []string{
		"100.100.100.200", "100.64.0.0", "100.127.255.255", // shared address space, cloud metadata
		"169.254.169.254", "192.0.0.1", "192.0.0.255", "198.18.0.1", "198.19.255.255",
		"0.0.0.0", "0.1.2.3", "0.255.255.255", "127.0.0.1", "127.255.255.254", "10.1.2.3", "172.31.0.1", "192.168.1.1",
		"192.0.2.1", "198.51.100.7", "203.0.113.9", "240.0.0.1", "255.255.255.255", "224.0.0.1", "239.255.255.250",
		"192.88.99.1",
		// IPv6, and IPv4 embedded in it.
		"::", "::1", "fe80::1", "fe80::1%eth0", "fc00::1", "fd12:3456::1", "fec0::1", "ff02::1", "ff0e::1",
		"::ffff:127.0.0.1", "::ffff:169.254.169.254", "::ffff:8.8.8.8", "::127.0.0.1",
		"64:ff9b::a9fe:a9fe", "64:ff9b::6464:64c8", "64:ff9b::7f00:1", "64:ff9b::a00:1", "64:ff9b:1::808:808",
		"2002:7f00:1::", "2002:a9fe:a9fe::1", "2002:808:808::1", "2001::1", "2001:0:4136:e378:8000:63bf:3fff:fdd2",
		"2001:db8::1", "3fff::1", "5f00::1", "100::1", "100:0:0:1::1", "2001:2::1", "2001:10::1",
		"4000::1", "::2",
	}
	for _, s := range refused {
		if err := CheckAddress(netip.MustParseAddr(s)); !errors.Is(err, ErrForbiddenAddress) {
			t.Errorf("%s: allowed, want refused", s)
		}
	}
	allowed := []string{
		"8.8.8.8", "1.1.1.1", "93.184.215.14", "100.63.255.255", "100.128.0.0", "169.253.255.255", "172.32.0.1",
		"192.0.0.9", "192.0.0.10", "192.31.196.1", "192.52.193.1", "192.88.99.2", "198.17.255.255", "198.20.0.0",
		"223.255.255.255", "11.0.0.1",
		"2001:4860:4860::8888", "2606:4700:4700::1111", "2a00:1450:4001::1", "64:ff9b::808:808", "64:ff9b::101:101",
		"2001:1::1", "2001:1::2", "2001:1::3", "2001:3::1", "2001:4:112::1", "2001:20::1", "2001:30::1", "2620:4f:8000::1",
		"3fff:1000::1",
	}
	for _, s := range allowed {
		if err := CheckAddress(netip.MustParseAddr(s)); err != nil {
			t.Errorf("%s: refused: %v", s, err)
		}
	}
	var ae *AddressError
	if err := CheckAddress(netip.MustParseAddr("100.100.100.200")); !errors.As(err, &ae) || ae.Range.String() != "100.64.0.0/10" ||
		!strings.Contains(err.Error(), "RFC 6598") {
		t.Errorf("100.100.100.200: %v, want the range and its RFC named", err)
	}
	if err := CheckAddress(netip.MustParseAddr("64:ff9b::a9fe:a9fe")); !errors.As(err, &ae) || ae.Embeds.String() != "169.254.169.254" {
		t.Errorf("NAT64 of 169.254.169.254: %v, want the embedded address named", err)
	}
	if err := CheckAddress(netip.Addr{}); !errors.Is(err, ErrForbiddenAddress) {
		t.Error("the zero address is allowed")
	}
}

func TestCheckURLIsTheRequestTimeRule(t *testing.T) {
	t.Parallel()
	for _, u := range []string{
		"http://100.100.100.200/latest/meta-data/", "http://169.254.169.254/", "http://[::ffff:169.254.169.254]/",
		"https://[64:ff9b::a9fe:a9fe]:8443/x", "http://127.0.0.1:9/", "http://[::1]/", "http://0.0.0.1/", "http://[fe80::1%25eth0]/",
	} {
		if err := CheckURL(u, false); !errors.Is(err, ErrForbiddenAddress) {
			t.Errorf("%s: %v, want refused", u, err)
		}
		if err := CheckURL(u, true); err != nil {
			t.Errorf("%s with private networks allowed: %v", u, err)
		}
	}
	for _, u := range []string{"https://example.com/hook", "http://8.8.8.8/hook", "https://[2001:4860:4860::8888]/hook", "http://localhost.example/x"} {
		if err := CheckURL(u, false); err != nil {
			t.Errorf("%s: %v", u, err)
		}
	}
	if err := CheckURL("ftp://8.8.8.8/", true); err == nil || errors.Is(err, ErrForbiddenAddress) {
		t.Errorf("ftp URL: %v, want the syntax rule's error", err)
	}
}

// TestTheDialledAddressIsChecked resolves a name to loopback with the
// client's lookup: refused with private networks off (the receiver is
// never reached), delivered with them on. Only loopback is ever dialled.
func TestTheDialledAddressIsChecked(t *testing.T) {
	t.Parallel()
	var hits atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { hits.Add(1) }))
	t.Cleanup(srv.Close)
	u, _ := url.Parse(srv.URL)
	port := u.Port()
	lookup := func(_ context.Context, host string) ([]netip.Addr, error) {
		switch host {
		case "hooks.customer.example":
			return []netip.Addr{netip.MustParseAddr("127.0.0.1")}, nil
		case "mapped.customer.example":
			return []netip.Addr{netip.MustParseAddr("::ffff:127.0.0.1")}, nil
		}
		return nil, fmt.Errorf("no such host %s", host)
	}
	post := func(c *http.Client, host string) error {
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, "http://"+host+":"+port+"/cb", strings.NewReader("{}"))
		resp, err := c.Do(req)
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		return err
	}
	strict := NewClientWithLookup(5*time.Second, false, lookup)
	for _, h := range []string{"hooks.customer.example", "mapped.customer.example", "127.0.0.1"} {
		if err := post(strict, h); !errors.Is(err, ErrForbiddenAddress) {
			t.Errorf("%s → loopback with private networks off: %v, want refused", h, err)
		}
	}
	if n := hits.Load(); n != 0 {
		t.Fatalf("the receiver was reached %d times with private networks off", n)
	}
	open := NewClientWithLookup(5*time.Second, true, lookup)
	if err := post(open, "hooks.customer.example"); err != nil {
		t.Fatalf("with private networks on: %v", err)
	}
	if hits.Load() != 1 {
		t.Fatalf("receiver hits = %d, want 1", hits.Load())
	}
}
