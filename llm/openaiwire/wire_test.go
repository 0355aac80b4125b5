package openaiwire_test

import (
	"encoding/json"
	"testing"

	"github.com/tollgate/tollgate/llm/openaiwire"
)

func TestErrorBodyNullsEmptyParamAndCode(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		param, code, want string
	}{
		{"", "", `{"error":{"message":"m","type":"t","param":null,"code":null}}`},
		{"model", "model_not_found", `{"error":{"message":"m","type":"t","param":"model","code":"model_not_found"}}`},
	} {
		b, err := json.Marshal(openaiwire.NewErrorBody("m", "t", c.param, c.code))
		if err != nil || string(b) != c.want {
			t.Errorf("NewErrorBody(%q, %q) = %s, %v; want %s", c.param, c.code, b, err, c.want)
		}
	}
}

func TestStringLeavesHTMLToTheEncoder(t *testing.T) {
	t.Parallel()
	if got := string(openaiwire.String(`<b>&"`)); got != `"<b>&\""` {
		t.Errorf("String = %s", got)
	}
	b, _ := json.Marshal(struct {
		S json.RawMessage `json:"s"`
	}{openaiwire.String("<b>")})
	if string(b) != `{"s":"\u003cb\u003e"}` {
		t.Errorf("json.Marshal escapes as for a string: %s", b)
	}
	if openaiwire.OptionalString("") != nil {
		t.Error("OptionalString(\"\") is not omitted")
	}
}

func TestContentTextAndToolCallText(t *testing.T) {
	t.Parallel()
	text, images, err := openaiwire.ContentText(json.RawMessage(`[{"type":"text","text":"a"},{"type":"image_url","image_url":{"url":"x"}},{"type":"text","text":"b"}]`))
	if err != nil || text != "ab" || images != 1 {
		t.Errorf("ContentText = %q, %d, %v", text, images, err)
	}
	if _, _, err := openaiwire.ContentText(json.RawMessage(`{"a":1}`)); err == nil {
		t.Error("ContentText of an object: no error")
	}
	var m openaiwire.Message
	if err := json.Unmarshal([]byte(`{"role":"assistant","tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":"{\"x\":1}"}}]}`), &m); err != nil {
		t.Fatal(err)
	}
	name, args, err := m.ToolCalls[0].Function.Text()
	if err != nil || name != "f" || args != `{"x":1}` {
		t.Errorf("Text = %q, %q, %v", name, args, err)
	}
	if _, _, err := (openaiwire.FunctionCall{Name: json.RawMessage(`5`)}).Text(); err == nil {
		t.Error("a name that is not a string: no error")
	}
}

func TestChunkUsage(t *testing.T) {
	t.Parallel()
	var c openaiwire.Chunk
	if err := json.Unmarshal([]byte(`{"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":4}}`), &c); err != nil {
		t.Fatal(err)
	}
	u, err := c.UsageOf()
	if p, k, ok := u.Counts(); err != nil || !ok || p != 3 || k != 4 {
		t.Errorf("UsageOf = %+v, %v", u, err)
	}
	c.Usage = openaiwire.Null
	if u, err := c.UsageOf(); u != nil || err != nil {
		t.Errorf("null usage = %+v, %v", u, err)
	}
}
