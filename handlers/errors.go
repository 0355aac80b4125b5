package handlers

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"

	"github.com/tollgate/tollgate/commands"
	"github.com/tollgate/tollgate/events"
	"github.com/tollgate/tollgate/llm"
)

// apiError is an error with the HTTP status and the OpenAI error fields
// the client gets.
type apiError struct {
	Status  int
	Type    string
	Code    string
	Message string
	Param   string
}

func (e *apiError) Error() string { return fmt.Sprintf("%d %s: %s", e.Status, e.Type, e.Message) }

func badRequest(code, param, format string, args ...any) *apiError {
	return &apiError{Status: http.StatusBadRequest, Type: "invalid_request_error", Code: code, Param: param, Message: fmt.Sprintf(format, args...)}
}

// errorBody is OpenAI's error body.
type errorBody struct {
	Error struct {
		Message string  `json:"message"`
		Type    string  `json:"type"`
		Param   *string `json:"param"`
		Code    *string `json:"code"`
	} `json:"error"`
}

// toAPIError maps every error a handler can meet to what the client sees.
// It is the one place where domain outcomes become HTTP statuses.
func toAPIError(err error) *apiError {
	var ae *apiError
	var le *llm.Error
	var ve *commands.ValidationError
	switch {
	case errors.As(err, &ae):
		return ae
	case errors.As(err, &le):
		return &apiError{Status: le.Status, Type: le.Type, Code: le.Code, Message: le.Message}
	case errors.As(err, &ve):
		return badRequest("invalid_value", ve.Field, "%s", ve.Error())
	case errors.Is(err, commands.ErrNotFound):
		return &apiError{Status: http.StatusNotFound, Type: "invalid_request_error", Code: "not_found", Message: "No such object."}
	case errors.Is(err, commands.ErrAlreadyExists), errors.Is(err, events.ErrConflict), errors.Is(err, commands.ErrAlreadyClaimed), errors.Is(err, commands.ErrWrongState):
		return &apiError{Status: http.StatusConflict, Type: "invalid_request_error", Code: "conflict", Message: "The object changed concurrently or is in a state that does not allow this; retry."}
	case errors.Is(err, commands.ErrInvalid):
		return badRequest("invalid_value", "", "%s", err.Error())
	default:
		return &apiError{Status: http.StatusInternalServerError, Type: "server_error", Code: "internal_error", Message: "The server had an error while processing your request."}
	}
}

func writeError(w http.ResponseWriter, ae *apiError) {
	var body errorBody
	body.Error.Message, body.Error.Type = ae.Message, ae.Type
	if ae.Code != "" {
		body.Error.Code = &ae.Code
	}
	if ae.Param != "" {
		body.Error.Param = &ae.Param
	}
	writeJSON(w, ae.Status, body)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v) // the client may be gone; nothing to do then
}

func writeRaw(w http.ResponseWriter, status int, body []byte) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(body)
}
