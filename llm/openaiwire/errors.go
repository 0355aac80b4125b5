package openaiwire

import "encoding/json"

// OpenAI error types used by Tollgate.
const (
	TypeInvalidRequest = "invalid_request_error"
	TypeUpstream       = "upstream_error"
	TypeTimeout        = "timeout"
	TypeRateLimit      = "rate_limit_error"
	TypeServer         = "server_error"
)

// ErrorBody is OpenAI's error body, {"error":{"message","type","param","code"}}.
type ErrorBody struct {
	Error ErrorDetail `json:"error"`
}

// ErrorDetail is the error inside an ErrorBody; an empty param or code is null.
type ErrorDetail struct {
	Message string  `json:"message"`
	Type    string  `json:"type"`
	Param   *string `json:"param"`
	Code    *string `json:"code"`
}

// NewErrorBody builds an error body; an empty param or code is sent as null.
func NewErrorBody(message, typ, param, code string) ErrorBody {
	d := ErrorDetail{Message: message, Type: typ}
	if param != "" {
		d.Param = &param
	}
	if code != "" {
		d.Code = &code
	}
	return ErrorBody{Error: d}
}

// ProviderError is an error body as providers send it: the code may be
// a string, a number or null (CodeText reads it).
type ProviderError struct {
	Error *struct {
		Message string          `json:"message"`
		Type    string          `json:"type"`
		Code    json.RawMessage `json:"code"`
	} `json:"error"`
}

// CodeText reads an error code that is a string, a number or null.
func CodeText(raw json.RawMessage) string {
	if len(raw) == 0 || string(raw) == "null" {
		return ""
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s
	}
	return string(raw)
}
