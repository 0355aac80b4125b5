package llm

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/tollgate/tollgate/llm/openaiwire"
)

// maxSSEEvent caps one server-sent event, so a provider that never ends a
// line cannot exhaust memory.
const maxSSEEvent = 4 << 20

// sseEvent is one server-sent event: its "event:" name (may be empty) and
// its "data:" lines joined by newlines.
type sseEvent struct {
	name string
	data []byte
}

// sseReader reads server-sent events (the text/event-stream format).
type sseReader struct {
	r *bufio.Reader
}

func newSSEReader(r io.Reader) *sseReader { return &sseReader{r: bufio.NewReaderSize(r, 64<<10)} }

// next returns the next event with data; io.EOF at the end of the body
// (io.ErrUnexpectedEOF when it ends inside an event).
func (s *sseReader) next() (sseEvent, error) {
	var ev sseEvent
	var data bytes.Buffer
	hasData := false
	for {
		line, err := s.readLine()
		if err != nil {
			if errors.Is(err, io.EOF) && (hasData || ev.name != "") {
				return sseEvent{}, io.ErrUnexpectedEOF
			}
			return sseEvent{}, err
		}
		if len(line) == 0 {
			if hasData {
				ev.data = data.Bytes()
				return ev, nil
			}
			ev = sseEvent{} // an event without data is dispatched as nothing
			continue
		}
		if line[0] == ':' {
			continue // comment, e.g. a keep-alive
		}
		field, value, _ := bytes.Cut(line, []byte(":"))
		value = bytes.TrimPrefix(value, []byte(" "))
		switch string(field) {
		case "event":
			ev.name = string(value)
		case "data":
			if hasData {
				data.WriteByte('\n')
			}
			data.Write(value)
			hasData = true
			if data.Len() > maxSSEEvent {
				return sseEvent{}, fmt.Errorf("server-sent event larger than %d bytes", maxSSEEvent)
			}
		}
	}
}

// readLine reads one line without its CR/LF terminator.
func (s *sseReader) readLine() ([]byte, error) {
	var line []byte
	for {
		frag, err := s.r.ReadSlice('\n')
		line = append(line, frag...)
		if err == nil {
			break
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			if len(line) > maxSSEEvent {
				return nil, fmt.Errorf("server-sent event line longer than %d bytes", maxSSEEvent)
			}
			continue
		}
		if errors.Is(err, io.EOF) && len(line) > 0 {
			// A last line without newline ends the stream mid-event.
			return nil, io.ErrUnexpectedEOF
		}
		return nil, err
	}
	return bytes.TrimRight(line, "\r\n"), nil
}

// chunkSource produces OpenAI chunks for a chunkStream.
type chunkSource interface {
	// fill returns the next chunks (possibly none), and done after the last.
	fill() (chunks []json.RawMessage, done bool, err error)
	// partial returns provider-reported usage known before the end of the
	// stream (Anthropic reports input tokens at message start), if any.
	partial() (prompt, completion int64, ok bool)
	close() error
}

// chunkStream is the Stream every provider returns: it keeps the usage
// (reported or counted), the time to first token, and sticky errors.
type chunkStream struct {
	provider, model string
	src             chunkSource
	now             func() time.Time
	start           time.Time
	promptEstimate  int64

	pending []json.RawMessage
	done    bool
	err     error
	closed  bool

	mu       sync.Mutex
	content  strings.Builder
	tools    strings.Builder
	reported *Usage
	firstAt  time.Time
	// partialPrompt/partialCompletion snapshot src.partial after each fill,
	// so Usage never reads the source while Next writes it.
	partialPrompt, partialCompletion int64
	hasPartial                       bool
}

func newChunkStream(provider, model string, src chunkSource, now func() time.Time, start time.Time, body json.RawMessage) *chunkStream {
	prompt, err := CountPromptTokens(body)
	if err != nil {
		prompt = 0 // the body was valid JSON when sent; a count of 0 is honest about knowing nothing
	}
	return &chunkStream{provider: provider, model: model, src: src, now: now, start: start, promptEstimate: prompt}
}

// Next implements Stream.
func (s *chunkStream) Next() (json.RawMessage, error) {
	for {
		if len(s.pending) > 0 {
			c := s.pending[0]
			s.pending = s.pending[1:]
			s.inspect(c)
			return c, nil
		}
		if s.err != nil {
			return nil, s.err
		}
		if s.done {
			return nil, io.EOF
		}
		if s.closed {
			return nil, errors.New("llm: stream is closed")
		}
		chunks, done, err := s.src.fill()
		s.pending, s.done, s.err = chunks, done, err
		p, c, ok := s.src.partial()
		s.mu.Lock()
		s.partialPrompt, s.partialCompletion, s.hasPartial = p, c, ok
		s.mu.Unlock()
	}
}

// inspect records what a chunk generated and any usage it reports. A
// chunk it cannot read (which the executor refuses anyway) counts nothing.
func (s *chunkStream) inspect(raw json.RawMessage) {
	var c openaiwire.Chunk
	if json.Unmarshal(raw, &c) != nil {
		return
	}
	usage, err := c.UsageOf()
	if err != nil {
		return
	}
	type piece struct{ content, tools string }
	var pieces []piece
	for _, ch := range c.Choices {
		var p piece
		text, err := openaiwire.Unquote(ch.Delta.Content)
		if err != nil {
			return
		}
		p.content = text
		var tools strings.Builder
		for _, tc := range ch.Delta.ToolCalls {
			name, args, err := tc.Function.Text()
			if err != nil {
				return
			}
			if name != "" {
				tools.WriteString(" " + name + " ")
			}
			tools.WriteString(args)
		}
		if p.content != "" || len(ch.Delta.ToolCalls) > 0 {
			p.tools = tools.String()
			pieces = append(pieces, p)
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, p := range pieces {
		s.content.WriteString(p.content)
		s.tools.WriteString(p.tools)
		if s.firstAt.IsZero() {
			s.firstAt = s.now()
		}
	}
	if p, c, ok := usage.Counts(); ok && p >= 0 && c >= 0 {
		s.reported = &Usage{PromptTokens: p, CompletionTokens: c}
	}
}

// Usage implements Stream.
func (s *chunkStream) Usage() Usage {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.reported != nil {
		return *s.reported
	}
	u := Usage{PromptTokens: s.promptEstimate, CompletionTokens: CountTokens(s.content.String()) + CountTokens(s.tools.String()), Estimated: true}
	if s.hasPartial {
		u.PromptTokens = s.partialPrompt
		u.CompletionTokens = max(u.CompletionTokens, s.partialCompletion)
	}
	return u
}

// Provider implements Stream.
func (s *chunkStream) Provider() string { return s.provider }

// UpstreamModel implements Stream.
func (s *chunkStream) UpstreamModel() string { return s.model }

// TimeToFirstToken implements Stream, measured from the provider call.
func (s *chunkStream) TimeToFirstToken() time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.firstAt.IsZero() {
		return 0
	}
	return s.firstAt.Sub(s.start)
}

// firstTokenAt is when the first content chunk arrived (zero before).
func (s *chunkStream) firstTokenAt() time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.firstAt
}

// Attempts implements Stream: a provider's stream is a single attempt.
func (s *chunkStream) Attempts() []*Error { return nil }

// Close implements Stream.
func (s *chunkStream) Close() error {
	if s.closed {
		return nil
	}
	s.closed = true
	s.pending = nil
	return s.src.close()
}

// sseDecoder turns a provider's server-sent events into OpenAI chunks.
type sseDecoder interface {
	// decode handles one event; done after the stream's last event.
	decode(ev sseEvent) (chunks []json.RawMessage, done bool, err error)
	// eof is called when the body ends before done: nil accepts the stream
	// as complete (it had finished, only the end marker is missing),
	// otherwise the error to return.
	eof() error
	// partial is chunkSource.partial.
	partial() (prompt, completion int64, ok bool)
}

// sseSource reads an upstream's SSE body through a decoder. Every read is
// bounded by the provider's timeout (an idle timeout), so a hung stream
// ends as a timeout rather than holding the client forever.
type sseSource struct {
	base        *httpBase
	parent, ctx context.Context
	body        io.ReadCloser
	sse         *sseReader
	dec         sseDecoder
	reset, stop func()
}

func (s *sseSource) fill() ([]json.RawMessage, bool, error) {
	s.reset()
	ev, err := s.sse.next()
	if err != nil {
		if errors.Is(err, io.EOF) {
			if err := s.dec.eof(); err != nil {
				return nil, false, err
			}
			return nil, true, nil
		}
		if s.parent.Err() == nil && s.ctx.Err() == nil && !errors.Is(err, io.ErrUnexpectedEOF) && !isNetErr(err) {
			// Not a transport failure: the event itself was unreadable.
			return nil, false, s.base.invalid(http.StatusOK, "%v", err)
		}
		e := s.base.transportError(s.parent, s.ctx, err)
		var le *Error
		if errors.As(e, &le) && le.Class == ClassConnection {
			le.Message = fmt.Sprintf("provider %q broke off the stream", s.base.name)
		}
		return nil, false, e
	}
	return s.dec.decode(ev)
}

func (s *sseSource) partial() (int64, int64, bool) { return s.dec.partial() }

func (s *sseSource) close() error {
	s.stop()
	if err := s.body.Close(); err != nil {
		return fmt.Errorf("llm provider %q: close stream: %w", s.base.name, err)
	}
	return nil
}

// isNetErr reports whether err came from the connection rather than the data.
func isNetErr(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) ||
		errors.Is(err, net.ErrClosed) || strings.Contains(err.Error(), "connection reset")
}

// openStream posts a streaming request and returns its chunkStream.
func (b *httpBase) openStream(parent context.Context, url string, header http.Header, body, clientBody []byte,
	parseErr errorParser, upstreamModel string, dec sseDecoder) (Stream, error) {
	start := b.now()
	ctx, reset, stop := b.attempt(parent)
	resp, err := b.post(parent, ctx, url, header, body, parseErr)
	if err != nil {
		stop()
		return nil, err
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/event-stream") {
		_ = resp.Body.Close()
		stop()
		return nil, b.invalid(resp.StatusCode, "asked for a stream, got Content-Type %q", ct)
	}
	src := &sseSource{base: b, parent: parent, ctx: ctx, body: resp.Body, sse: newSSEReader(resp.Body), dec: dec, reset: reset, stop: stop}
	return newChunkStream(b.name, upstreamModel, src, b.now, start, clientBody), nil
}
