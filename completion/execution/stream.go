package execution

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/tollgate/tollgate/completion"
	"github.com/tollgate/tollgate/config"
	"github.com/tollgate/tollgate/domainerr"
	"github.com/tollgate/tollgate/events"
	"github.com/tollgate/tollgate/llm"
	"github.com/tollgate/tollgate/llm/openaiwire"
)

// Streamer starts streamed completions.
type Streamer interface {
	Stream(ctx context.Context, model config.Model, body json.RawMessage) (llm.Stream, error)
}

// Interruption reasons of a stream that ended before the provider finished.
const (
	InterruptedClientGone = "client_disconnected"
	InterruptedUpstream   = "upstream_error"
)

// RunStream executes a claimed completion as a stream: every chunk the
// provider produces is passed to emit as it arrives. When emit fails (the
// client went away) the upstream call is cancelled; when the provider fails
// after the first chunk, the stream ends there. Either way what was
// generated until then is recorded and billed: usage from the provider when
// it reported it, counted by Tollgate otherwise (and marked estimated), so
// no streamed request is ever recorded at zero cost. A failure before the
// first chunk records completion.failed, like Run.
func (x *Executor) RunStream(ctx context.Context, md events.Metadata, c completion.Completion, emit func(chunk json.RawMessage) error) (completion.Completion, error) {
	return x.runStream(ctx, md, c, nil, emit)
}

// runStream is RunStream, and StreamInline with p set.
func (x *Executor) runStream(ctx context.Context, md events.Metadata, c completion.Completion, p *Inline, emit func(chunk json.RawMessage) error) (completion.Completion, error) {
	if c.Status != completion.StatusRunning {
		return c, fmt.Errorf("run %s: %w", c.ID, domainerr.ErrWrongState)
	}
	if x.cfg.Streams == nil {
		return c, errors.New("execution: streaming is not configured")
	}
	md.Actor = c.Executor
	finish := completion.FinishCompletion{Executor: c.Executor}
	start := x.cfg.Now()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	model, ok := x.cfg.Models(c.Model)
	if !ok {
		finish.Failed = failure(ctx, llm.ModelRemoved(c.Model), x.cfg.Now().Sub(start))
		return x.record(ctx, md, c, finish, x.cfg.Now().Sub(start), p)
	}
	// The claim is renewed while the stream is being opened (the router's
	// deadline bounds it), then while its chunks keep reaching the client.
	k, kctx := x.keep(ctx, md, c, p)
	// A synchronous stream's request and claim are stored while the
	// stream opens, before its first chunk reaches the client.
	stored := p.storeAsync(kctx)
	// recordKept stops the renewals and records the outcome on the claim
	// as last renewed, unless the claim was lost.
	recordKept := func(finish completion.FinishCompletion, elapsed time.Duration) (completion.Completion, error) {
		_ = stored() // the outcome follows the claim's store, however it ended
		held, lost := k.stop()
		if lost != nil {
			x.outcomes.WithLabelValues(c.Model, c.Mode, "unrecorded").Inc()
			return held, claimLost(c.ID, lost)
		}
		return x.record(ctx, md, held, finish, elapsed, p)
	}
	s, err := x.cfg.Streams.Stream(kctx, model, c.Request)
	if err != nil {
		finish.Attempts = attempts(llm.AttemptsOf(err))
		finish.Failed = failure(ctx, err, x.cfg.Now().Sub(start))
		return recordKept(finish, x.cfg.Now().Sub(start))
	}
	defer s.Close()
	if err := stored(); err != nil {
		// Nothing may reach the client before its request is stored.
		_, _ = k.stop()
		x.outcomes.WithLabelValues(c.Model, c.Mode, "unrecorded").Inc()
		if x.cfg.Transient(err) && !x.cfg.Ambiguous(err) {
			err = fmt.Errorf("%w: %w", ErrNotStored, err)
		}
		return c, fmt.Errorf("stream %s: %w", c.ID, err)
	}
	k.gate()
	finish.Attempts = attempts(s.Attempts())

	asm := newAssembler(c.ID, c.Model)
	interrupted, err := pump(ctx, s, asm, emit, k.touch, cancel)
	if err != nil {
		// Nothing reached the client: an ordinary failure.
		finish.Failed = failure(ctx, err, x.cfg.Now().Sub(start))
		return recordKept(finish, x.cfg.Now().Sub(start))
	}
	elapsed := x.cfg.Now().Sub(start)
	if finish.Succeeded, err = streamed(s, asm, model, interrupted, elapsed); err != nil {
		finish.Failed = failure(ctx, err, elapsed)
	}
	return recordKept(finish, elapsed)
}

// streamed is the completion.succeeded of a stream that delivered.
func streamed(s llm.Stream, asm *assembler, model config.Model, interrupted string, elapsed time.Duration) (*events.CompletionSucceeded, error) {
	usage := s.Usage()
	cost, err := model.ParsedPrice().Cost(usage.PromptTokens, usage.CompletionTokens)
	if err != nil {
		return nil, llm.BadAnswer(s.Provider(), "The provider reported unusable token counts.")
	}
	return &events.CompletionSucceeded{
		Provider:      s.Provider(),
		UpstreamModel: s.UpstreamModel(),
		Usage: events.Usage{
			PromptTokens: usage.PromptTokens, CompletionTokens: usage.CompletionTokens,
			TotalTokens: usage.PromptTokens + usage.CompletionTokens, Estimated: usage.Estimated,
		},
		CostNanoUSD: int64(cost),
		LatencyMS:   elapsed.Milliseconds(),
		Response:    asm.response(usage),
		Stream:      true,
		Interrupted: interrupted,
		TTFTMS:      s.TimeToFirstToken().Milliseconds(),
	}, nil
}

// pump passes the stream's chunks through asm to emit until it ends, and
// says why it ended early ("" when it did not). A failure before the first
// chunk is returned as err: nothing reached the client. progress is called
// after each chunk the client got; cancel ends the upstream call when the
// client went away.
func pump(ctx context.Context, s llm.Stream, asm *assembler, emit func(json.RawMessage) error, progress, cancel func()) (interrupted string, err error) {
	for {
		chunk, err := s.Next()
		if errors.Is(err, io.EOF) {
			return "", nil
		}
		if err != nil {
			if asm.chunks == 0 {
				return "", err
			}
			if ctx.Err() != nil {
				return InterruptedClientGone, nil
			}
			return InterruptedUpstream, nil
		}
		if chunk, err = asm.add(chunk); err != nil {
			return InterruptedUpstream, nil
		}
		if err := emit(chunk); err != nil {
			cancel()
			return InterruptedClientGone, nil
		}
		progress()
	}
}

// assembler rebuilds the chat.completion a stream amounts to, for the
// completion.succeeded event and the job API, and gives every chunk the
// completion's id and the client-facing model name.
type assembler struct {
	id, model string
	chunks    int
	created   int64
	fp        string
	choices   map[int]*assembledChoice
}

// assembledChoice keeps the content as the insides of the JSON string
// literals the provider sent, concatenated: the bytes stay exactly as they
// came (escapes, \u0000, lone surrogates, which a Go string would turn
// into U+FFFD), and a surrogate pair split across two chunks is whole
// again.
type assembledChoice struct {
	role      string
	content   strings.Builder
	finish    *string
	toolCalls map[int]*assembledToolCall
}

type assembledToolCall struct {
	id, typ string
	name    json.RawMessage
	args    strings.Builder
}

func newAssembler(id, model string) *assembler {
	return &assembler{id: id, model: model, choices: map[int]*assembledChoice{}}
}

// add records a chunk and returns it as the client sees it.
func (a *assembler) add(chunk json.RawMessage) (json.RawMessage, error) {
	chunk = validUTF8(chunk)
	var sc openaiwire.Chunk
	if err := json.Unmarshal(chunk, &sc); err != nil {
		return nil, fmt.Errorf("stream chunk: %w", err)
	}
	a.chunks++
	if a.created == 0 {
		a.created = sc.Created
	}
	if sc.SystemFingerprint != "" {
		a.fp = sc.SystemFingerprint
	}
	for _, ch := range sc.Choices {
		c := a.choices[ch.Index]
		if c == nil {
			c = &assembledChoice{toolCalls: map[int]*assembledToolCall{}}
			a.choices[ch.Index] = c
		}
		if ch.Delta.Role != "" {
			c.role = ch.Delta.Role
		}
		if err := appendString(&c.content, ch.Delta.Content); err != nil {
			return nil, fmt.Errorf("stream chunk: content: %w", err)
		}
		for _, tc := range ch.Delta.ToolCalls {
			var idx int
			if tc.Index != nil {
				idx = *tc.Index
			}
			t := c.toolCalls[idx]
			if t == nil {
				t = &assembledToolCall{}
				c.toolCalls[idx] = t
			}
			if tc.ID != "" {
				t.id = tc.ID
			}
			if tc.Type != "" {
				t.typ = tc.Type
			}
			if isString(tc.Function.Name) && string(tc.Function.Name) != `""` {
				t.name = tc.Function.Name
			}
			if err := appendString(&t.args, tc.Function.Arguments); err != nil {
				return nil, fmt.Errorf("stream chunk: arguments: %w", err)
			}
		}
		if ch.FinishReason != nil {
			c.finish = ch.FinishReason
		}
	}
	// Decoded above: valid JSON, valid UTF-8.
	return openaiwire.WithIDAndModel(chunk, a.id, a.model)
}

// response returns the assembled chat.completion.
func (a *assembler) response(u llm.Usage) json.RawMessage {
	out := openaiwire.Completion{ID: a.id, Object: openaiwire.ObjectCompletion, Created: a.created, Model: a.model,
		SystemFingerprint: a.fp, Choices: []openaiwire.Choice{}, Usage: openaiwire.NewUsage(u.PromptTokens, u.CompletionTokens)}
	idx := make([]int, 0, len(a.choices))
	for i := range a.choices {
		idx = append(idx, i)
	}
	sort.Ints(idx)
	for _, i := range idx {
		out.Choices = append(out.Choices, openaiwire.Choice{Index: i, Message: a.choices[i].message(), FinishReason: a.choices[i].finish})
	}
	raw, err := json.Marshal(out)
	if err != nil {
		// Strings, numbers and string literals the provider sent, each
		// valid (its chunk was): Marshal cannot fail.
		return json.RawMessage(`{}`)
	}
	return raw
}

// message is the assembled message of a choice.
func (c *assembledChoice) message() openaiwire.Message {
	role := c.role
	if role == "" {
		role = "assistant"
	}
	m := openaiwire.Message{Role: role, Content: json.RawMessage("null")}
	if c.content.Len() > 0 || len(c.toolCalls) == 0 {
		m.Content = literal(&c.content)
	}
	tcs := make([]int, 0, len(c.toolCalls))
	for j := range c.toolCalls {
		tcs = append(tcs, j)
	}
	sort.Ints(tcs)
	for _, j := range tcs {
		t := c.toolCalls[j]
		tc := openaiwire.ToolCall{ID: t.id, Type: t.typ}
		if tc.Type == "" {
			tc.Type = "function"
		}
		tc.Function.Name, tc.Function.Arguments = t.name, literal(&t.args)
		if tc.Function.Name == nil {
			tc.Function.Name = json.RawMessage(`""`)
		}
		m.ToolCalls = append(m.ToolCalls, tc)
	}
	return m
}

// isString reports whether raw is a JSON string literal.
func isString(raw json.RawMessage) bool { return len(raw) >= 2 && raw[0] == '"' }

// appendString appends the inside of the JSON string literal raw, as it
// is (escapes kept), to b; null or nothing appends nothing.
func appendString(b *strings.Builder, raw json.RawMessage) error {
	switch {
	case len(raw) == 0 || string(raw) == "null":
		return nil
	case !isString(raw):
		return errors.New("not a string")
	}
	b.Write(raw[1 : len(raw)-1])
	return nil
}

// literal is b's insides as a JSON string literal.
func literal(b *strings.Builder) json.RawMessage {
	out := make(json.RawMessage, 0, b.Len()+2)
	out = append(out, '"')
	out = append(out, b.String()...)
	return append(out, '"')
}

// validUTF8 returns raw with every byte that is not UTF-8 replaced by
// U+FFFD. Inside a JSON string Go's decoder takes such bytes, PostgreSQL
// does not: an answer kept as it came could not be recorded, nor billed.
// Valid input (all of it, in practice) is returned as it is.
func validUTF8(raw json.RawMessage) json.RawMessage {
	if utf8.Valid(raw) {
		return raw
	}
	return bytes.ToValidUTF8(raw, []byte("\uFFFD"))
}
