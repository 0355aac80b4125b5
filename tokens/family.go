// Package tokens bounds what a chat request can cost in tokens before it
// is sent: an honest upper bound of its prompt, for budget reservations.
//
// Where the model's tokenizer is known (OpenAI's o200k_base and
// cl100k_base, through github.com/tiktoken-go/tokenizer, whose BPE ranks
// are compiled in: nothing is downloaded) the prompt is counted with it;
// otherwise, and whenever counting would cost too much (a huge prompt),
// the bound comes from the bytes: a byte-level BPE tokenizer never makes
// more tokens than the text has UTF-8 bytes. Per-message, per-image and
// tool overheads are added to either.
package tokens

import "strings"

// Encoding names a tokenizer; Bytes is the byte bound (tokenizer unknown).
type Encoding string

// Encodings.
const (
	Bytes  Encoding = "bytes"
	O200k  Encoding = "o200k_base"
	Cl100k Encoding = "cl100k_base"
)

// Per-image upper bounds, from the providers' documented image costing.
const (
	// OpenAI tile models (gpt-4o, gpt-4.1, gpt-4.5, o1, o3, gpt-5): an image
	// is scaled into 2048×2048 and its short side to 768, so at most 2×4
	// tiles of 512 px: 85 + 170 × 8.
	imageTilesOpenAI = 85 + 170*8
	// gpt-4o-mini bills images as 2833 + 5667 per tile: 2833 + 5667 × 8.
	imageTilesMini = 2833 + 5667*8
	// OpenAI patch models (gpt-4.1-mini/nano, o4-mini, gpt-5-mini/nano): at
	// most 1536 patches of 32 px, times the model's multiplier (at most
	// 2.46, gpt-4.1-nano's).
	imagePatches = 1536 * 246 / 100
	// Anthropic: tokens = width × height / 750, images above 1.15 MP are
	// scaled down: about 1600; 1800 leaves room.
	imageAnthropic = 1800
	// Unknown models (a local vision model): Qwen2-VL's largest image is
	// 16384 tokens, the most of the common open models.
	imageUnknown = 16384
	// imageEcho is what the built-in echo model counts per image.
	imageEcho = 85
)

// Tool overheads: what a provider adds to the prompt when tools are present,
// beyond their definitions' text.
const (
	// OpenAI renders functions in a namespace block: a few tokens per
	// function and for the block.
	toolsBlockOpenAI = 32
	toolPerFunction  = 16
	// Anthropic adds a tool-use system prompt of up to 530 tokens (Claude 3
	// Opus; 346 for Claude 4.x).
	toolsBlockAnthropic = 600
)

// Family is what a bound needs to know of the models that may serve a
// request (a model's every deployment, its fallbacks included).
type Family struct {
	// Encoding counts the text; Bytes when unknown, or when the
	// deployments do not share one tokenizer.
	Encoding Encoding
	// ImageTokens bounds one image part.
	ImageTokens int64
	// ToolsBlock is added once when the request has tools.
	ToolsBlock int64
}

// Provider kinds, as in the configuration.
const (
	kindOpenAI    = "openai"
	kindAnthropic = "anthropic"
	kindEcho      = "echo"
)

// ForDeployment returns the family of one deployment: the provider's kind,
// whether it is Azure (whose deployment names say nothing of the model),
// and the upstream model name.
func ForDeployment(kind string, azure bool, model string) Family {
	switch kind {
	case kindEcho:
		return Family{Encoding: Bytes, ImageTokens: imageEcho}
	case kindAnthropic:
		return Family{Encoding: Bytes, ImageTokens: imageAnthropic, ToolsBlock: toolsBlockAnthropic}
	case kindOpenAI:
		if azure {
			return Family{Encoding: Bytes, ImageTokens: imageTilesMini, ToolsBlock: toolsBlockOpenAI}
		}
		return openAIFamily(model)
	}
	return Family{Encoding: Bytes, ImageTokens: imageUnknown, ToolsBlock: toolsBlockAnthropic}
}

// openAIFamily maps an OpenAI model name to its tokenizer and image cost;
// a name it does not know (a local server speaking OpenAI's API) gets the
// byte bound.
func openAIFamily(model string) Family {
	m := strings.ToLower(model)
	m = strings.TrimPrefix(m, "openai/")
	if rest, ok := strings.CutPrefix(m, "ft:"); ok {
		m = rest
	}
	has := func(prefixes ...string) bool {
		for _, p := range prefixes {
			if m == p || strings.HasPrefix(m, p+"-") || strings.HasPrefix(m, p+":") {
				return true
			}
		}
		return false
	}
	f := Family{ToolsBlock: toolsBlockOpenAI}
	switch {
	case has("gpt-4o-mini", "chatgpt-4o-mini"):
		f.Encoding, f.ImageTokens = O200k, imageTilesMini
	case has("gpt-4.1-mini", "gpt-4.1-nano", "o4-mini", "gpt-5-mini", "gpt-5-nano"):
		f.Encoding, f.ImageTokens = O200k, imagePatches
	case has("gpt-4o", "chatgpt-4o", "gpt-4.1", "gpt-4.5", "gpt-5", "o1", "o3", "o4"):
		f.Encoding, f.ImageTokens = O200k, imageTilesOpenAI
	case has("gpt-4", "gpt-3.5-turbo", "gpt-35-turbo"):
		f.Encoding, f.ImageTokens = Cl100k, imageTilesOpenAI
	default:
		return Family{Encoding: Bytes, ImageTokens: imageUnknown, ToolsBlock: toolsBlockAnthropic}
	}
	return f
}

// Merge is the family that bounds every one of fs: their common encoding
// (else Bytes) and the largest overheads.
func Merge(fs ...Family) Family {
	if len(fs) == 0 {
		return Family{Encoding: Bytes, ImageTokens: imageUnknown, ToolsBlock: toolsBlockAnthropic}
	}
	out := fs[0]
	for _, f := range fs[1:] {
		if f.Encoding != out.Encoding {
			out.Encoding = Bytes
		}
		out.ImageTokens = max(out.ImageTokens, f.ImageTokens)
		out.ToolsBlock = max(out.ToolsBlock, f.ToolsBlock)
	}
	return out
}
