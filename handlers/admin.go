package handlers

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"net/http"

	"github.com/gorilla/mux"

	"github.com/tollgate/tollgate/account"
	"github.com/tollgate/tollgate/events"
)

const (
	keyPrefix = "tg_"
	alphabet  = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
)

// randomID returns n random base62 characters.
func randomID(n int) string {
	b := make([]byte, n)
	// rand.Read never fails on supported platforms (it panics instead).
	_, _ = rand.Read(b)
	for i := range b {
		// 256 % 62 skews the distribution by under 2%, irrelevant for ids;
		// secrets are long enough that it costs well under a bit each.
		b[i] = alphabet[int(b[i])%len(alphabet)]
	}
	return string(b)
}

func hashKey(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(sum[:])
}

// decodeJSON reads a JSON body into v, answering 413 for a body over the
// limit and 400 for malformed JSON, a field of the wrong type, or text
// that is not UTF-8 or holds an unpaired surrogate (naming the field).
func decodeJSON(r *http.Request, v any) *apiError {
	body, err := io.ReadAll(r.Body)
	if ae := bodyError(err); ae != nil {
		return ae
	}
	return unmarshalClient(body, v)
}

func bodyError(err error) *apiError {
	if err == nil {
		return nil
	}
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return &apiError{Status: http.StatusRequestEntityTooLarge, Type: "invalid_request_error", Code: "request_too_large",
			Message: "The request body is larger than this server accepts."}
	}
	return badRequest("invalid_body", "", "The request body could not be read.")
}

func (a *API) adminMetadata(r *http.Request) events.Metadata {
	cid := correlationID(r.Context())
	return events.Metadata{CorrelationID: cid, CausationID: cid, Actor: "admin"}
}

type accountJSON struct {
	ID               string `json:"id"`
	Object           string `json:"object"`
	Name             string `json:"name"`
	Email            string `json:"email,omitempty"`
	Plan             string `json:"plan"`
	StripeCustomerID string `json:"stripe_customer_id,omitempty"`
}

func toAccountJSON(a account.Account) accountJSON {
	return accountJSON{ID: a.ID, Object: "account", Name: a.Name, Email: a.Email, Plan: a.Plan, StripeCustomerID: a.StripeCustomerID}
}

func (a *API) createAccount(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Name             string `json:"name"`
		Email            string `json:"email"`
		Plan             string `json:"plan"`
		StripeCustomerID string `json:"stripe_customer_id"`
	}
	ae := decodeJSON(r, &req)
	if ae == nil {
		ae = checkTexts("name", req.Name, "email", req.Email, "plan", req.Plan, "stripe_customer_id", req.StripeCustomerID)
	}
	if ae != nil {
		writeError(w, ae)
		return
	}
	if req.Plan == "" {
		req.Plan = "free"
	}
	acc, err := a.cfg.Service.CreateAccount(r.Context(), a.adminMetadata(r), account.CreateAccount{
		AccountID: "acc_" + randomID(24), Name: req.Name, Email: req.Email, Plan: req.Plan, StripeCustomerID: req.StripeCustomerID,
	})
	if err != nil {
		a.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, toAccountJSON(acc))
}

func (a *API) getAccount(w http.ResponseWriter, r *http.Request) {
	acc, err := a.cfg.Service.Account(r.Context(), mux.Vars(r)["id"])
	if err != nil {
		a.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, toAccountJSON(acc))
}

func (a *API) issueKey(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Name string `json:"name"`
	}
	ae := decodeJSON(r, &req)
	if ae == nil {
		ae = checkText("name", req.Name)
	}
	if ae != nil {
		writeError(w, ae)
		return
	}
	secret := keyPrefix + randomID(43)
	k, err := a.cfg.Service.IssueAPIKey(r.Context(), a.adminMetadata(r), account.IssueAPIKey{
		KeyID: "key_" + randomID(24), AccountID: mux.Vars(r)["id"], Name: req.Name,
		Hash: hashKey(secret), Prefix: secret[:len(keyPrefix)+6],
	})
	if err != nil {
		a.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, map[string]string{
		"id": k.ID, "object": "api_key", "account_id": k.AccountID, "name": k.Name,
		// The secret is shown this once; only its hash is stored.
		"key": secret, "prefix": k.Prefix,
	})
}

func (a *API) revokeKey(w http.ResponseWriter, r *http.Request) {
	k, err := a.cfg.Service.RevokeAPIKey(r.Context(), a.adminMetadata(r), mux.Vars(r)["id"])
	if err != nil {
		a.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"id": k.ID, "object": "api_key", "revoked": k.Revoked})
}

// fail writes err's API error (toAPIError: a dependency outage is a 503
// with Retry-After) and logs server-side failures; an outage's lines are
// said once per interval by the API's logger (NewOutageLogHandler), not
// once per request.
func (a *API) fail(w http.ResponseWriter, r *http.Request, err error) {
	ae := toAPIError(err)
	if ae.Status >= 500 {
		a.cfg.Logger.ErrorContext(r.Context(), "request failed", "correlation_id", correlationID(r.Context()), "error", err)
	}
	writeError(w, ae)
}
