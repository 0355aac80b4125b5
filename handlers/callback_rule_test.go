package handlers

import (
	"net/http"
	"strings"
	"testing"

	"github.com/tollgate/tollgate/config"
)

// TestCallbackURLRuleAtRequestTime: the chat endpoint refuses, with a 400
// naming callback_url, the addresses the dispatcher would refuse to dial,
// and lets allow_private_networks lift it, as the dispatcher does.
func TestCallbackURLRuleAtRequestTime(t *testing.T) {
	t.Parallel()
	api := func(allowPrivate bool) *API {
		cfg := &config.Config{}
		cfg.Env.CallbackSecret = "cb-secret-0123456789"
		cfg.Jobs.Callbacks.AllowPrivateNetworks = allowPrivate
		return &API{cfg: APIConfig{Config: cfg}}
	}
	body := func(u string) []byte {
		return []byte(`{"model":"m","callback_url":"` + u + `","messages":[{"role":"user","content":"hi"}]}`)
	}
	for _, u := range []string{"http://100.100.100.200/latest/meta-data/", "http://198.18.0.1/", "http://[64:ff9b::a9fe:a9fe]/", "http://[::ffff:10.0.0.1]/", "http://127.0.0.1:8080/"} {
		ae := api(false).validateCallback(body(u))
		if ae == nil || ae.Status != http.StatusBadRequest || ae.Param != "callback_url" || !strings.Contains(ae.Message, "not globally reachable") {
			t.Errorf("%s: %+v, want 400 naming callback_url", u, ae)
		}
		if ae := api(true).validateCallback(body(u)); ae != nil {
			t.Errorf("%s with allow_private_networks: %+v", u, ae)
		}
	}
	for _, u := range []string{"https://hooks.example.com/tollgate", "https://8.8.8.8/x"} {
		if ae := api(false).validateCallback(body(u)); ae != nil {
			t.Errorf("%s: %+v", u, ae)
		}
	}
}
