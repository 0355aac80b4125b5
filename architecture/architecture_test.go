// Package architecture_test checks the rules the layout promises (README,
// "Layout"): the domain imports no driver, only the wiring imports the
// HTTP layer, and code stays in files and functions a reader can hold.
package architecture_test

import (
	"bytes"
	"encoding/json"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

const module = "github.com/tollgate/tollgate"

// domain is every package that holds decisions, state, money, token math or
// event types: none of them may depend, even indirectly, on a driver.
var domain = []string{
	"account", "billing", "commands", "completion", "domainerr", "events",
	"llm/openaiwire", "money", "quota", "tokens",
}

// drivers are the import paths the domain must not reach.
var drivers = []string{
	"github.com/jackc/pgx", "github.com/redis/go-redis", "github.com/IBM/sarama",
	"github.com/ThreeDotsLabs/watermill", "github.com/stripe/stripe-go", "net/http",
}

// wiring is the only package allowed to import the HTTP layer.
var wiring = map[string]bool{module + "/server": true}

type pkg struct {
	ImportPath string
	Dir        string
	Imports    []string
	Deps       []string
	GoFiles    []string
}

func list(t *testing.T, args ...string) []pkg {
	t.Helper()
	cmd := exec.Command("go", append([]string{"list", "-json"}, args...)...)
	cmd.Dir = ".."
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("go list: %v\n%s", err, errb.String())
	}
	var pkgs []pkg
	dec := json.NewDecoder(&out)
	for dec.More() {
		var p pkg
		if err := dec.Decode(&p); err != nil {
			t.Fatal(err)
		}
		pkgs = append(pkgs, p)
	}
	return pkgs
}

func TestDomainImportsNoDriver(t *testing.T) {
	t.Parallel()
	args := []string{"-deps=false"}
	for _, d := range domain {
		args = append(args, module+"/"+d)
	}
	for _, p := range list(t, args...) {
		for _, dep := range p.Deps {
			for _, d := range drivers {
				if dep == d || strings.HasPrefix(dep, d+"/") {
					t.Errorf("domain package %s depends on the driver %s", p.ImportPath, dep)
				}
			}
		}
	}
}

func TestOnlyTheWiringImportsHTTPHandlers(t *testing.T) {
	t.Parallel()
	for _, p := range list(t, "./...") {
		for _, imp := range p.Imports {
			if imp == module+"/handlers" && !wiring[p.ImportPath] {
				t.Errorf("%s imports the HTTP layer (handlers); only the wiring (server) may", p.ImportPath)
			}
		}
	}
}

// TestSizes: no file holds more than 500 lines of non-test code, and a
// function over 80 lines says why in its doc comment ("is long because").
func TestSizes(t *testing.T) {
	t.Parallel()
	fset := token.NewFileSet()
	for _, p := range list(t, "./...") {
		for _, name := range p.GoFiles {
			path := filepath.Join(p.Dir, name)
			src, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			rel, _ := filepath.Rel(mustAbs(t, ".."), path)
			if n := bytes.Count(src, []byte("\n")); n > 500 {
				t.Errorf("%s: %d lines; split it (at most 500 lines of non-test code)", rel, n)
			}
			f, err := parser.ParseFile(fset, path, src, parser.ParseComments)
			if err != nil {
				t.Fatal(err)
			}
			for _, d := range f.Decls {
				fn, ok := d.(*ast.FuncDecl)
				if !ok || fn.Body == nil {
					continue
				}
				lines := fset.Position(fn.End()).Line - fset.Position(fn.Pos()).Line + 1
				if lines > 80 && !strings.Contains(fn.Doc.Text(), "is long because") {
					t.Errorf("%s: %s is %d lines; split it or say in its doc comment why it is long (\"is long because\")", rel, fn.Name.Name, lines)
				}
			}
		}
	}
}

func mustAbs(t *testing.T, p string) string {
	t.Helper()
	a, err := filepath.Abs(p)
	if err != nil {
		t.Fatal(err)
	}
	return a
}
