package faults

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"
)

// Request modes of the load.
const (
	killSync   = "sync"
	killStream = "stream"
	killAsync  = "async"
)

// killResult is what the client saw of one request.
type killResult struct {
	mode   string
	status int    // 0: no HTTP answer (connection refused or cut)
	id     string // the completion id, when the answer named it
	// complete: a sync 200 with its body, a stream that reached [DONE]
	// without an error chunk, a 202 with its job.
	complete bool
	err      string
}

// killLoad drives sync, streamed and queued requests at the API.
type killLoad struct {
	base   string
	key    string
	client *http.Client
	mu     sync.Mutex
	res    []killResult
}

func newKillLoad(base, key string) *killLoad {
	return &killLoad{base: base, key: key, client: &http.Client{
		Timeout:   20 * time.Second,
		Transport: &http.Transport{MaxIdleConnsPerHost: 32, ResponseHeaderTimeout: 20 * time.Second},
	}}
}

// run sends requests from workers goroutines, and slow ones (longer than
// the lease) from slow goroutines, until stop; requests in flight at stop
// are finished, not cancelled.
func (l *killLoad) run(workers, slow int, stop time.Time) {
	var wg sync.WaitGroup
	modes := []string{killSync, killStream, killAsync}
	for w := range workers + slow {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; time.Now().Before(stop); i++ {
				prompt := fmt.Sprintf("worker %d request %d", w, i)
				if w >= workers {
					prompt += ", " + killSlowWord
				}
				r := l.one(modes[i%len(modes)], prompt)
				l.mu.Lock()
				l.res = append(l.res, r)
				l.mu.Unlock()
				if r.status == 0 {
					time.Sleep(50 * time.Millisecond) // the API is down: don't spin
				}
			}
		}()
	}
	wg.Wait()
}

func (l *killLoad) results() []killResult {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]killResult(nil), l.res...)
}

func (l *killLoad) one(mode, prompt string) killResult {
	r := killResult{mode: mode}
	body := map[string]any{"model": "m", "messages": []map[string]string{{"role": "user", "content": prompt}}}
	if mode == killStream {
		body["stream"] = true
		body["stream_options"] = map[string]bool{"include_usage": true}
	}
	raw, _ := json.Marshal(body)
	req, err := http.NewRequestWithContext(context.Background(), http.MethodPost, l.base+"/v1/chat/completions", bytes.NewReader(raw))
	if err != nil {
		r.err = err.Error()
		return r
	}
	req.Header.Set("Authorization", "Bearer "+l.key)
	req.Header.Set("Content-Type", "application/json")
	if mode == killAsync {
		req.Header.Set("Prefer", "respond-async")
	}
	resp, err := l.client.Do(req)
	if err != nil {
		r.err = err.Error()
		return r
	}
	defer resp.Body.Close()
	r.status = resp.StatusCode
	if mode == killStream && resp.StatusCode == http.StatusOK {
		r.id, r.complete, err = readKillStream(resp.Body)
		if err != nil {
			r.err = err.Error()
		}
		return r
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		r.err = err.Error()
		return r
	}
	var out struct {
		ID string `json:"id"`
	}
	if err := json.Unmarshal(b, &out); err != nil {
		r.err = fmt.Sprintf("decode %q: %v", b, err)
		return r
	}
	r.id = out.ID
	r.complete = (resp.StatusCode == http.StatusOK || resp.StatusCode == http.StatusAccepted) && out.ID != ""
	if !r.complete {
		r.err = string(b)
	}
	return r
}

// readKillStream reads an SSE answer: the completion id of its chunks,
// and whether it reached [DONE] without an error chunk.
func readKillStream(body io.Reader) (id string, complete bool, err error) {
	sc := bufio.NewScanner(body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	failed := false
	for sc.Scan() {
		data, ok := strings.CutPrefix(sc.Text(), "data: ")
		if !ok {
			continue
		}
		if data == "[DONE]" {
			return id, !failed, nil
		}
		var chunk struct {
			ID    string          `json:"id"`
			Error json.RawMessage `json:"error"`
		}
		if err := json.Unmarshal([]byte(data), &chunk); err != nil {
			return id, false, fmt.Errorf("chunk %q: %w", data, err)
		}
		if chunk.Error != nil {
			failed = true
		}
		if id == "" {
			id = chunk.ID
		}
	}
	if err := sc.Err(); err != nil {
		return id, false, err
	}
	return id, false, io.ErrUnexpectedEOF
}
