package config

import (
	"fmt"
	"strings"
	"time"
)

// Provider kinds.
const (
	// KindOpenAI is any server speaking OpenAI's chat completions API.
	KindOpenAI = "openai"
	// KindEcho is the built-in development provider that answers with the last user message.
	KindEcho = "echo"
	// KindAnthropic is the Anthropic Messages API, translated to and from OpenAI's format.
	KindAnthropic = "anthropic"
)

// Provider defaults.
const (
	DefaultProviderTimeout = 120 * time.Second
	// DefaultAnthropicBaseURL is the base URL of an anthropic provider without base_url.
	DefaultAnthropicBaseURL = "https://api.anthropic.com"
	// DefaultAnthropicVersion is the anthropic-version header sent when api_version is unset.
	DefaultAnthropicVersion = "2023-06-01"
)

// Provider is an upstream LLM endpoint.
type Provider struct {
	Name string `yaml:"name"`
	// Kind is "openai" (any OpenAI-compatible server, Azure OpenAI included),
	// "anthropic" (the Anthropic Messages API) or "echo" (built-in dev provider).
	Kind string `yaml:"kind"`
	// BaseURL is required for openai, e.g. https://api.openai.com/v1, or for
	// Azure the resource endpoint, e.g. https://my-resource.openai.azure.com.
	// For anthropic it defaults to https://api.anthropic.com.
	BaseURL string `yaml:"base_url"`
	// APIKeyEnv names the env var holding the key (optional: local servers need none).
	APIKeyEnv string `yaml:"api_key_env"`
	// APIVersion, on an openai provider, selects Azure OpenAI: requests go to
	// {base_url}/openai/deployments/{deployment}/chat/completions?api-version={api_version},
	// where {deployment} is each deployment's model (the Azure deployment
	// name), authenticated with an api-key header. On an anthropic provider
	// it is the anthropic-version header, default 2023-06-01.
	APIVersion string `yaml:"api_version"`
	// Timeout is the per-attempt timeout, default 120s. A streamed attempt
	// must deliver its first chunk within it, and each later chunk within it
	// of the previous one (an idle timeout: a long stream that keeps flowing
	// is never cut).
	Timeout Duration `yaml:"timeout"`
}

// IsAzure reports whether the provider is Azure OpenAI (an openai provider with an api_version).
func (p Provider) IsAzure() bool { return p.Kind == KindOpenAI && p.APIVersion != "" }

// Provider returns the provider with the given name.
func (c *Config) Provider(name string) (Provider, bool) {
	for _, p := range c.Providers {
		if p.Name == name {
			return p, true
		}
	}
	return Provider{}, false
}

func (p *Provider) setDefaults() {
	if p.Timeout == 0 {
		p.Timeout = Duration(DefaultProviderTimeout)
	}
	if p.Kind == KindAnthropic {
		if p.BaseURL == "" {
			p.BaseURL = DefaultAnthropicBaseURL
		}
		if p.APIVersion == "" {
			p.APIVersion = DefaultAnthropicVersion
		}
	}
}

// validateProviders checks the providers and returns their names.
func validateProviders(ps []Provider, bad *problems) map[string]bool {
	names := map[string]bool{}
	if len(ps) == 0 {
		bad.add("providers", "at least one provider is required")
	}
	for i, p := range ps {
		f := fmt.Sprintf("providers[%d]", i)
		checkName(f, "provider", p.Name, names, bad)
		p.validate(f, bad)
	}
	return names
}

// validate checks one provider's kind and the fields that go with it.
func (p Provider) validate(f string, bad *problems) {
	switch p.Kind {
	case KindOpenAI, KindAnthropic:
		if p.BaseURL == "" {
			bad.add(f+".base_url", "required for an openai provider (e.g. https://api.openai.com/v1)")
		} else if !isHTTPURL(p.BaseURL) {
			bad.add(f+".base_url", "%q must start with http:// or https://", p.BaseURL)
		}
		if strings.ContainsAny(p.APIVersion, "&#?/ ") {
			bad.add(f+".api_version", "%q is not a version (e.g. 2024-10-21)", p.APIVersion)
		}
	case KindEcho:
		if p.APIVersion != "" {
			bad.add(f+".api_version", "not used by an echo provider")
		}
	case "":
		bad.add(f+".kind", "required (%q, %q or %q)", KindOpenAI, KindAnthropic, KindEcho)
	default:
		bad.add(f+".kind", "unknown provider kind %q (want %q, %q or %q)", p.Kind, KindOpenAI, KindAnthropic, KindEcho)
	}
	if p.Timeout < 0 {
		bad.add(f+".timeout", "must be positive, got %s", p.Timeout.D())
	}
}

// isHTTPURL reports whether u starts with http:// or https://.
func isHTTPURL(u string) bool {
	return strings.HasPrefix(u, "http://") || strings.HasPrefix(u, "https://")
}
