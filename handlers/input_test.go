package handlers

import "testing"

func TestFindBadTextNamesTheField(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name, doc, path string
		problem         textProblem
	}{
		{"clean", `{"a":"x\u0000y","b":["\ud83d\ude00",1,true,null,{"c":"\\ud800"}]}`, "", textOK},
		{"top-level string", `"\ud800"`, "", textLoneSurrogate},
		{"nested arrays", `{"a":[[1],[2,"\udc00"]]}`, "a[1][1]", textLoneSurrogate},
		{"after a nested object", `{"a":{"b":{"c":1}},"d":"` + "\xff" + `"}`, "d", textNotUTF8},
		{"escaped key", `{"k\"ey":{"x":"\ud800 "}}`, `k"ey.x`, textLoneSurrogate},
		{"bad key names the object", `{"o":{"\ud800":1}}`, "o", textLoneSurrogate},
		{"high surrogate at the end", `["ok","x\ud800"]`, "[1]", textLoneSurrogate},
		{"high surrogate before an escape", `["\ud800\n"]`, "[0]", textLoneSurrogate},
		{"escaped backslash then u", `["\\u0041\\ud800"]`, "", textOK},
		{"overlong encoding", "[\"\xc0\xaf\"]", "[0]", textNotUTF8},
		{"whitespace everywhere", " { \"a\" : [ 1 , \"\\udfff\" ] } ", "a[1]", textLoneSurrogate},
	} {
		bt, found := findBadText([]byte(c.doc))
		if found != (c.problem != textOK) || (found && (bt.path != c.path || bt.problem != c.problem)) {
			t.Errorf("%s: found %v at %q (%d), want %q (%d)", c.name, found, bt.path, bt.problem, c.path, c.problem)
		}
	}
}
