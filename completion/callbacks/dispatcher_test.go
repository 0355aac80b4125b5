package callbacks_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tollgate/tollgate/commands"
	"github.com/tollgate/tollgate/completion"
	"github.com/tollgate/tollgate/completion/callbacks"
	"github.com/tollgate/tollgate/events"
	"github.com/tollgate/tollgate/events/pgstore"
	"github.com/tollgate/tollgate/pgtest"
)

var secret = []byte("whsec_0123456789abcdef")

// receiver is a callback endpoint that answers with the scripted statuses
// (then 200) and checks every request's signature.
type receiver struct {
	t        *testing.T
	mu       sync.Mutex
	script   []int
	bodies   [][]byte
	jobIDs   []string
	badSigs  int
	requests atomic.Int64
}

func (rc *receiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rc.requests.Add(1)
	body, _ := io.ReadAll(r.Body)
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if err := callbacks.Verify(secret, r.Header.Get(callbacks.SignatureHeader), body, time.Now(), 0); err != nil {
		rc.badSigs++
	}
	rc.bodies = append(rc.bodies, body)
	rc.jobIDs = append(rc.jobIDs, r.Header.Get(callbacks.JobIDHeader))
	status := http.StatusOK
	if len(rc.script) > 0 {
		status, rc.script = rc.script[0], rc.script[1:]
	}
	w.WriteHeader(status)
}

// failingStore refuses callback outcome appends: the dispatcher's process
// dies after the receiver answered and before the outcome is stored.
type failingStore struct{ *pgstore.Store }

func (s failingStore) Append(ctx context.Context, stream string, v int64, evs ...events.Envelope) ([]events.Envelope, error) {
	for _, e := range evs {
		if e.Type == events.TypeCompletionCallbackDelivered || e.Type == events.TypeCompletionCallbackFailed {
			return nil, errors.New("process died")
		}
	}
	return s.Store.Append(ctx, stream, v, evs...)
}

type fixture struct {
	t     *testing.T
	pool  *pgxpool.Pool
	store *pgstore.Store
	svc   *commands.Service
}

func newFixture(t *testing.T) *fixture {
	pool, _ := pgtest.NewPool(t)
	store, err := pgstore.New(pool, nil)
	if err != nil {
		t.Fatal(err)
	}
	return &fixture{t: t, pool: pool, store: store, svc: commands.NewService(store, func(string) bool { return true }, time.Now)}
}

// finished records a completed job whose request names url.
func (f *fixture) finished(id, url string) {
	f.t.Helper()
	ctx := context.Background()
	req := `{"model":"m","callback_url":` + string(must(json.Marshal(url))) + `,"messages":[{"role":"user","content":"hi"}]}`
	c, err := f.svc.RequestCompletion(ctx, events.Metadata{}, completion.RequestCompletion{
		CompletionID: id, AccountID: "acc_1", KeyID: "key_1", Model: "m", Mode: events.ModeAsync, Request: json.RawMessage(req),
	}, &completion.StartCompletion{Executor: "worker:w", Now: time.Now(), Lease: time.Minute})
	if err != nil {
		f.t.Fatal(err)
	}
	if _, err := f.svc.FinishClaimed(ctx, events.Metadata{}, c, completion.FinishCompletion{Executor: "worker:w",
		Succeeded: &events.CompletionSucceeded{Provider: "p", UpstreamModel: "u", Usage: events.Usage{PromptTokens: 1, CompletionTokens: 1}, Response: json.RawMessage(`{"id":"x"}`)}}); err != nil {
		f.t.Fatal(err)
	}
}

func must(b []byte, err error) []byte {
	if err != nil {
		panic(err)
	}
	return b
}

func render(c completion.Completion) ([]byte, error) {
	return json.Marshal(map[string]any{"id": c.ID, "object": "job", "status": c.Status})
}

func (f *fixture) dispatcher(svc *commands.Service, instance string, allowPrivate bool, maxAttempts int, slept *[]time.Duration) *callbacks.Dispatcher {
	f.t.Helper()
	var mu sync.Mutex
	d, err := callbacks.NewDispatcher(callbacks.Config{
		Service: svc, Pool: f.pool, Render: render, Secret: secret, Instance: instance,
		AllowPrivateNetworks: allowPrivate, MaxAttempts: maxAttempts, InitialBackoff: time.Second, MaxBackoff: 3 * time.Second,
		Sleep: func(_ context.Context, d time.Duration) error {
			mu.Lock()
			defer mu.Unlock()
			if slept != nil {
				*slept = append(*slept, d)
			}
			return nil
		},
	})
	if err != nil {
		f.t.Fatal(err)
	}
	return d
}

func (f *fixture) tail(id string) []string {
	f.t.Helper()
	evs, err := f.store.Load(context.Background(), completion.CompletionStream(id))
	if err != nil {
		f.t.Fatal(err)
	}
	var out []string
	for _, e := range evs[3:] {
		out = append(out, e.Type)
	}
	return out
}

func TestDeliveredAfterRetriesSignedOnce(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newFixture(t)
	rc := &receiver{t: t, script: []int{503, 429}}
	srv := httptest.NewServer(rc)
	defer srv.Close()
	f.finished("chatcmpl-cb1", srv.URL+"/hooks?src=tollgate")
	var slept []time.Duration
	d := f.dispatcher(f.svc, "d1", true, 5, &slept)
	out, err := d.Send(ctx, "chatcmpl-cb1")
	if err != nil || out != callbacks.Delivered {
		t.Fatalf("Send = %s, %v", out, err)
	}
	if rc.requests.Load() != 3 || rc.badSigs != 0 {
		t.Fatalf("receiver got %d requests, %d with a bad signature; want 3, 0", rc.requests.Load(), rc.badSigs)
	}
	if !slices.Equal(slept, []time.Duration{time.Second, 2 * time.Second}) {
		t.Errorf("backoffs = %v, want [1s 2s]", slept)
	}
	for i, b := range rc.bodies {
		var job map[string]any
		if err := json.Unmarshal(b, &job); err != nil || job["id"] != "chatcmpl-cb1" || job["status"] != "succeeded" || rc.jobIDs[i] != "chatcmpl-cb1" {
			t.Errorf("request %d: body %s, job id header %q", i, b, rc.jobIDs[i])
		}
	}
	c, err := f.svc.Completion(ctx, "chatcmpl-cb1")
	if err != nil {
		t.Fatal(err)
	}
	if dl := c.CallbackDelivered; dl == nil || dl.Attempts != 3 || dl.Status != 200 || dl.URL != srv.URL+"/hooks?src=tollgate" {
		t.Fatalf("delivered = %+v", dl)
	}
	// Sending again sends nothing and records nothing.
	if out, err := d.Send(ctx, "chatcmpl-cb1"); err != nil || out != callbacks.Skipped || rc.requests.Load() != 3 {
		t.Errorf("second Send = %s, %v, receiver at %d requests", out, err, rc.requests.Load())
	}
	if got := f.tail("chatcmpl-cb1"); !slices.Equal(got, []string{events.TypeCompletionCallbackDelivered}) {
		t.Errorf("events after the outcome = %v", got)
	}
}

func TestFailedCallbacks(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newFixture(t)
	always500 := &receiver{t: t, script: []int{500, 500, 500, 500}}
	gone := &receiver{t: t, script: []int{410}}
	s500, sGone := httptest.NewServer(always500), httptest.NewServer(gone)
	defer s500.Close()
	defer sGone.Close()
	f.finished("chatcmpl-cb500", s500.URL)
	f.finished("chatcmpl-cbgone", sGone.URL)
	f.finished("chatcmpl-cbprivate", s500.URL+"/private")
	d := f.dispatcher(f.svc, "d1", true, 3, nil)

	if out, err := d.Send(ctx, "chatcmpl-cb500"); err != nil || out != callbacks.Failed {
		t.Fatalf("Send = %s, %v", out, err)
	}
	if out, err := d.Send(ctx, "chatcmpl-cbgone"); err != nil || out != callbacks.Failed {
		t.Fatalf("Send = %s, %v", out, err)
	}
	// Without AllowPrivateNetworks a loopback receiver is never reached.
	before := always500.requests.Load()
	if out, err := f.dispatcher(f.svc, "d2", false, 3, nil).Send(ctx, "chatcmpl-cbprivate"); err != nil || out != callbacks.Failed {
		t.Fatalf("Send = %s, %v", out, err)
	}
	if always500.requests.Load() != before {
		t.Error("a callback reached a loopback address with private networks off")
	}
	for id, want := range map[string]struct{ status, attempts int }{
		"chatcmpl-cb500": {500, 3}, "chatcmpl-cbgone": {410, 1}, "chatcmpl-cbprivate": {0, 1},
	} {
		c, err := f.svc.Completion(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if fl := c.CallbackFailed; fl == nil || fl.Status != want.status || fl.Attempts != want.attempts || fl.Error == "" || c.CallbackDelivered != nil {
			t.Errorf("%s: failed = %+v, want status %d after %d attempts", id, fl, want.status, want.attempts)
		}
	}
}

// A dispatcher that dies before storing the outcome leaves the callback
// pending: the next one sends it again (at least once), and records it.
func TestCrashBeforeOutcomeResends(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newFixture(t)
	rc := &receiver{t: t}
	srv := httptest.NewServer(rc)
	defer srv.Close()
	f.finished("chatcmpl-cbcrash", srv.URL)
	dying := commands.NewService(failingStore{f.store}, func(string) bool { return true }, time.Now)
	if _, err := f.dispatcher(dying, "d1", true, 3, nil).Send(ctx, "chatcmpl-cbcrash"); err == nil {
		t.Fatal("the dying dispatcher stored its outcome")
	}
	if out, err := f.dispatcher(f.svc, "d2", true, 3, nil).Send(ctx, "chatcmpl-cbcrash"); err != nil || out != callbacks.Delivered {
		t.Fatalf("Send after the crash = %s, %v", out, err)
	}
	if rc.requests.Load() != 2 || rc.jobIDs[0] != rc.jobIDs[1] {
		t.Errorf("receiver got %d requests (%v), want the same job twice", rc.requests.Load(), rc.jobIDs)
	}
	if got := f.tail("chatcmpl-cbcrash"); !slices.Equal(got, []string{events.TypeCompletionCallbackDelivered}) {
		t.Errorf("events after the outcome = %v", got)
	}
}

// Dispatchers on several workers send one callback once between them.
func TestConcurrentDispatchersSendOnce(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newFixture(t)
	rc := &receiver{t: t}
	srv := httptest.NewServer(rc)
	defer srv.Close()
	f.finished("chatcmpl-cbrace", srv.URL)
	var wg sync.WaitGroup
	var delivered atomic.Int64
	for i := range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out, err := f.dispatcher(f.svc, string(rune('a'+i)), true, 3, nil).Send(ctx, "chatcmpl-cbrace")
			if err != nil {
				t.Errorf("dispatcher %d: %v", i, err)
			}
			if out == callbacks.Delivered {
				delivered.Add(1)
			}
		}()
	}
	wg.Wait()
	if rc.requests.Load() != 1 || delivered.Load() != 1 {
		t.Errorf("receiver got %d requests, %d dispatchers delivered; want 1 and 1", rc.requests.Load(), delivered.Load())
	}
	if got := f.tail("chatcmpl-cbrace"); !slices.Equal(got, []string{events.TypeCompletionCallbackDelivered}) {
		t.Errorf("events after the outcome = %v", got)
	}
}

func TestSignature(t *testing.T) {
	t.Parallel()
	at := time.Unix(1_800_000_000, 0)
	body := []byte(`{"id":"chatcmpl-1"}`)
	h := callbacks.Sign(secret, at, body)
	// The scheme, spelled out: HMAC-SHA256 over "<t>.<body>", hex.
	if h != "t=1800000000,v1="+hmacHex(secret, "1800000000."+string(body)) {
		t.Fatalf("Sign = %s", h)
	}
	if err := callbacks.Verify(secret, h, body, at.Add(time.Minute), 0); err != nil {
		t.Errorf("Verify: %v", err)
	}
	for name, tc := range map[string]struct {
		secret []byte
		header string
		body   []byte
		now    time.Time
		want   error
	}{
		"tampered body":  {secret, h, []byte(`{"id":"chatcmpl-2"}`), at, callbacks.ErrSignatureMismatch},
		"other secret":   {[]byte("another-secret-of-16+"), h, body, at, callbacks.ErrSignatureMismatch},
		"replayed later": {secret, h, body, at.Add(6 * time.Minute), callbacks.ErrSignatureTooOld},
		"no v1":          {secret, "t=1800000000", body, at, callbacks.ErrBadSignatureHeader},
		"garbage":        {secret, "sha256=abc", body, at, callbacks.ErrBadSignatureHeader},
		"v1 not hex":     {secret, "t=1800000000,v1=zz", body, at, callbacks.ErrBadSignatureHeader},
	} {
		if err := callbacks.Verify(tc.secret, tc.header, tc.body, tc.now, 0); !errors.Is(err, tc.want) {
			t.Errorf("%s: Verify = %v, want %v", name, err, tc.want)
		}
	}
}
