package llm

import (
	"encoding/json"
	"fmt"
	"unicode"
	"unicode/utf8"

	"github.com/tollgate/tollgate/llm/openaiwire"
)

// Per-message overheads from OpenAI's documented counting recipe: each
// message is wrapped as <|start|>{role}\n{content}<|end|>\n, and every reply
// is primed with <|start|>assistant<|message|>.
const (
	tokensPerMessage = 4
	tokensReplyPrime = 3
	// tokensPerImage is the base cost of one image part at low detail; Tollgate
	// does not fetch images, so higher detail is underestimated.
	tokensPerImage = 85
)

// CountTokens counts the tokens of text with a deterministic GPT-like
// pre-tokenizer: runs of letters, runs of digits split into groups of up to
// 3, each punctuation character, and runs of whitespace each count as one
// token, with a single leading space attached to the token that follows it.
// It is an honest estimate, not a BPE: real tokenizers split rare words further.
func CountTokens(text string) int64 {
	var n int64
	for rest := text; rest != ""; n++ {
		_, rest = nextToken(rest)
	}
	return n
}

// truncateTokens returns the prefix of text made of its first max tokens and
// whether anything was cut.
func truncateTokens(text string, limit int64) (string, bool) {
	rest := text
	for i := int64(0); i < limit && rest != ""; i++ {
		_, rest = nextToken(rest)
	}
	return text[:len(text)-len(rest)], rest != ""
}

// nextToken splits the first token off s. Tokens concatenate back to s exactly,
// which is what lets truncateTokens cut a reply on a token boundary.
func nextToken(s string) (tok, rest string) {
	r, size := utf8.DecodeRuneInString(s)
	i := 0
	if r == ' ' && size < len(s) {
		next, nextSize := utf8.DecodeRuneInString(s[size:])
		if !unicode.IsSpace(next) {
			// Attach the space to the word that follows, like " hello" in GPT vocabularies.
			i = size
			r, size = next, nextSize
		}
	}
	switch {
	case unicode.IsSpace(r):
		// A run of whitespace, leaving a final ' ' for the following word.
		j := i
		for j < len(s) {
			c, sz := utf8.DecodeRuneInString(s[j:])
			if !unicode.IsSpace(c) {
				break
			}
			if c == ' ' && j+sz < len(s) && j > i {
				if n, _ := utf8.DecodeRuneInString(s[j+sz:]); !unicode.IsSpace(n) {
					break
				}
			}
			j += sz
		}
		return s[:j], s[j:]
	case isLetter(r):
		j := i + size
		for j < len(s) {
			c, sz := utf8.DecodeRuneInString(s[j:])
			if !isLetter(c) {
				break
			}
			j += sz
		}
		return s[:j], s[j:]
	case unicode.IsDigit(r) || unicode.IsNumber(r):
		j := i + size
		for digits := 1; digits < 3 && j < len(s); digits++ {
			c, sz := utf8.DecodeRuneInString(s[j:])
			if !unicode.IsDigit(c) && !unicode.IsNumber(c) {
				break
			}
			j += sz
		}
		return s[:j], s[j:]
	default:
		// One punctuation or symbol character (or one invalid byte).
		return s[:i+size], s[i+size:]
	}
}

func isLetter(r rune) bool { return unicode.IsLetter(r) || unicode.IsMark(r) }

// promptTokens counts the tokens of a chat prompt using CountTokens and
// OpenAI's per-message overheads.
func promptTokens(p openaiwire.Prompt) (int64, error) {
	n := int64(tokensReplyPrime)
	for i, m := range p.Messages {
		text, images, err := openaiwire.ContentText(m.Content)
		if err != nil {
			return 0, fmt.Errorf("messages[%d]: %w", i, err)
		}
		n += tokensPerMessage + CountTokens(m.Role) + CountTokens(text) + int64(images)*tokensPerImage
		if m.Name != "" {
			n += CountTokens(m.Name)
		}
		calls, err := toolCallTokens(m.ToolCalls)
		if err != nil {
			return 0, fmt.Errorf("messages[%d].tool_calls: %w", i, err)
		}
		n += calls
	}
	if len(p.Tools) > 0 && string(p.Tools) != "null" {
		// Tool schemas are rendered into the prompt by the provider; their
		// JSON text is a fair estimate of that rendering.
		n += CountTokens(string(p.Tools))
	}
	return n, nil
}

// toolCallTokens counts the function names and arguments of tool calls.
func toolCallTokens(calls []openaiwire.ToolCall) (int64, error) {
	var n int64
	for _, tc := range calls {
		name, args, err := tc.Function.Text()
		if err != nil {
			return 0, err
		}
		n += CountTokens(name) + CountTokens(args)
	}
	return n, nil
}

// CountPromptTokens estimates the prompt tokens of an OpenAI chat completion
// request body: CountTokens of every message's role, name and text, 4 tokens
// per message, 3 for the reply priming, 85 per image part and the text of any
// tool definitions. Use it for reservations; bill the provider's usage.
func CountPromptTokens(body json.RawMessage) (int64, error) {
	var req openaiwire.Prompt
	if err := json.Unmarshal(body, &req); err != nil {
		return 0, fmt.Errorf("count prompt tokens: %w", err)
	}
	n, err := promptTokens(req)
	if err != nil {
		return 0, fmt.Errorf("count prompt tokens: %w", err)
	}
	return n, nil
}
