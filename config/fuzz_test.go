package config

import (
	"os"
	"path/filepath"
	"testing"
)

// FuzzParse feeds each input to Parse, Validate and Load as a YAML file:
// none may panic, a failure is an error that says something, and a
// configuration that validates can be looked up and validated again.
// Seeds: testdata/fuzz/FuzzParse. Run for longer with:
//
//	go test ./config -run '^$' -fuzz '^FuzzParse$' -fuzztime 60s
func FuzzParse(f *testing.F) {
	example, err := os.ReadFile("example.yaml")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(example)
	getenv := env(map[string]string{"OPENAI_API_KEY": "sk-test", "TOLLGATE_ADMIN_TOKEN": "admin-token-for-fuzzing"})
	// One file per worker process, rewritten for each input (a worker runs
	// its inputs one after the other).
	path := filepath.Join(f.TempDir(), "tollgate.yaml")
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := Parse(data)
		switch {
		case err != nil && err.Error() == "":
			t.Fatal("Parse failed with an empty error")
		case err == nil && cfg == nil:
			t.Fatal("Parse returned neither a config nor an error")
		case err == nil:
			if verr := cfg.Validate(); verr == nil {
				checkValid(t, cfg)
			} else if verr.Error() == "" {
				t.Fatal("Validate failed with an empty error")
			}
		}
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		loaded, lerr := Load(path, getenv)
		switch {
		case lerr != nil && lerr.Error() == "":
			t.Fatal("Load failed with an empty error")
		case lerr == nil && loaded == nil:
			t.Fatal("Load returned neither a config nor an error")
		case lerr == nil:
			checkValid(t, loaded)
		}
	})
}

// checkValid exercises a configuration that validated: every lookup
// works and a second validation agrees.
func checkValid(t *testing.T, cfg *Config) {
	t.Helper()
	for _, m := range cfg.Models {
		if _, ok := cfg.Model(m.Name); !ok {
			t.Fatalf("model %q validated but cannot be looked up", m.Name)
		}
		_ = m.ParsedPrice()
	}
	for _, p := range cfg.Plans {
		if _, ok := cfg.Plan(p.Name); !ok {
			t.Fatalf("plan %q validated but cannot be looked up", p.Name)
		}
		_, _ = p.DailyBudget()
		_, _ = p.MonthlyBudget()
		_, _ = p.RunawayCeiling()
		_, _ = cfg.PlanForStripePrice(p.StripePrice)
	}
	for _, p := range cfg.Providers {
		if _, ok := cfg.Provider(p.Name); !ok {
			t.Fatalf("provider %q validated but cannot be looked up", p.Name)
		}
	}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("validated once, then: %v", err)
	}
}
