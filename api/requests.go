package api

import (
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"

	"github.com/cnvrg/capsule/bucket"
	"github.com/cnvrg/capsule/client"
	"github.com/cnvrg/capsule/requests"
)

func (s *server) requestStatus(w http.ResponseWriter, r *http.Request) {
	id, ok := idParam(w, r)
	if !ok || !noQuery(w, r) {
		return
	}
	st, err := s.status(r, id)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, st)
}

// status reads a request's status through the size limit.
func (s *server) status(r *http.Request, id string) (*client.Status, error) {
	st, err := client.GetStatus(r.Context(), s.b, id, s.limit)
	if err != nil {
		return nil, err
	}
	if st.Request != nil && st.Request.Validate() != nil {
		// A malformed request stays pending until a worker rejects it;
		// what little of it parsed is not shown as if it were a request.
		st.Request = nil
	}
	return st, nil
}

func idParam(w http.ResponseWriter, r *http.Request) (string, bool) {
	id := r.PathValue("id")
	if err := requests.ValidateID(id); err != nil {
		writeError(w, http.StatusBadRequest, CodeInvalidParameter, "id", "id: "+err.Error())
		return "", false
	}
	return id, true
}

// submit handles POST /v1/requests: the body is a request object, decoded
// and validated exactly like one in the bucket (unknown fields refused),
// except that apiVersion and id may be left out (the server fills them
// in).
func (s *server) submit(w http.ResponseWriter, r *http.Request) {
	if !noQuery(w, r) {
		return
	}
	body, ok := readBody(w, r)
	if !ok {
		return
	}
	req, err := parseRequest(body)
	if err != nil {
		var fe *requests.FieldError
		if errors.As(err, &fe) {
			s.fail(w, r, err)
		} else {
			writeError(w, http.StatusBadRequest, CodeInvalidRequest, "", err.Error())
		}
		return
	}
	if err := client.Submit(r.Context(), s.b, req, s.limit); err != nil {
		if errors.Is(err, bucket.ErrTooLarge) {
			writeError(w, http.StatusRequestEntityTooLarge, CodeTooLarge, "", err.Error())
			return
		}
		s.fail(w, r, err)
		return
	}
	w.Header().Set("Location", "/v1/requests/"+req.ID)
	writeJSON(w, http.StatusCreated, client.Status{ID: req.ID, Status: requests.StatusPending, Request: req})
}

// parseRequest fills in apiVersion and a fresh id when the body has none,
// then parses it with requests.Parse. Errors are *requests.FieldError or
// a plain error about the JSON, both the client's fault.
func parseRequest(body []byte) (*requests.Request, error) {
	trimmed := bytes.TrimSpace(body)
	if len(trimmed) == 0 {
		return nil, errors.New("the body is empty: want a request object")
	}
	if trimmed[0] != '{' {
		return nil, errors.New("the body must be a JSON object (a request)")
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(body, &obj); err == nil && obj != nil {
		changed := false
		if _, ok := obj["apiVersion"]; !ok {
			obj["apiVersion"], changed = json.RawMessage(`"`+requests.APIVersion+`"`), true
		}
		if _, ok := obj["id"]; !ok {
			obj["id"], changed = json.RawMessage(`"`+requests.NewID()+`"`), true
		}
		if changed {
			if body, err = json.Marshal(obj); err != nil {
				return nil, err
			}
		}
	}
	return requests.Parse(body)
}

// cancelBody is the optional body of POST /v1/requests/{id}/cancel.
type cancelBody struct {
	Reason string `json:"reason,omitempty"`
}

func (s *server) cancel(w http.ResponseWriter, r *http.Request) {
	id, ok := idParam(w, r)
	if !ok || !noQuery(w, r) {
		return
	}
	body, ok := readBody(w, r)
	if !ok {
		return
	}
	var cb cancelBody
	if len(bytes.TrimSpace(body)) > 0 {
		dec := json.NewDecoder(bytes.NewReader(body))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&cb); err != nil || dec.More() {
			msg := "want {\"reason\": \"...\"} or no body"
			if err != nil {
				msg = fmt.Sprintf("%s: %v", msg, strings.TrimPrefix(err.Error(), "json: "))
			}
			writeError(w, http.StatusBadRequest, CodeInvalidRequest, "", msg)
			return
		}
		if len(cb.Reason) > 1024 {
			writeError(w, http.StatusBadRequest, CodeInvalidRequest, "reason", "reason: at most 1024 bytes")
			return
		}
	}
	st, err := s.status(r, id)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if st.Status.Ended() {
		writeError(w, http.StatusConflict, CodeConflict, "", fmt.Sprintf("request %s already ended %s", id, st.Status))
		return
	}
	if err := client.Cancel(r.Context(), s.b, id, cb.Reason, s.limit); err != nil {
		s.fail(w, r, err)
		return
	}
	if st, err = s.status(r, id); err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusAccepted, st)
}

func readBody(w http.ResponseWriter, r *http.Request) ([]byte, bool) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			writeError(w, http.StatusRequestEntityTooLarge, CodeTooLarge, "", fmt.Sprintf("the body is larger than %d bytes", maxBody))
		} else {
			writeError(w, http.StatusBadRequest, CodeInvalidRequest, "", "the body could not be read")
		}
		return nil, false
	}
	return body, true
}

// writes guards a write handler: it needs a configured token file and
// the token in "Authorization: Bearer <token>".
func (s *server) writes(next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if s.token == nil {
			writeError(w, http.StatusForbidden, CodeReadOnly, "", "this API is read-only: start it with an API token file to enable writes")
			return
		}
		want, err := s.token.digest()
		if err != nil {
			if rec, ok := w.(*recorder); ok {
				rec.err = err
			}
			writeError(w, http.StatusServiceUnavailable, CodeUnavailable, "", "the API token file cannot be read")
			return
		}
		scheme, token, _ := strings.Cut(r.Header.Get("Authorization"), " ")
		given := sha256.Sum256([]byte(strings.TrimSpace(token)))
		if !strings.EqualFold(scheme, "Bearer") || subtle.ConstantTimeCompare(given[:], want[:]) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="capsule"`)
			writeError(w, http.StatusUnauthorized, CodeUnauthorized, "", "writes need \"Authorization: Bearer <token>\" with the API token")
			return
		}
		next(w, r)
	}
}

// tokenFile holds the sha256 of the token in a file, re-read whenever
// the file changes (another file, size or modification time), so that a
// rotated token is used from the next request on.
type tokenFile struct {
	path string

	mu   sync.Mutex
	info os.FileInfo
	sum  [sha256.Size]byte
}

func (t *tokenFile) digest() ([sha256.Size]byte, error) {
	fi, err := os.Stat(t.path)
	if err != nil {
		return [sha256.Size]byte{}, err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.info != nil && os.SameFile(t.info, fi) && t.info.Size() == fi.Size() && t.info.ModTime().Equal(fi.ModTime()) {
		return t.sum, nil
	}
	data, err := os.ReadFile(t.path)
	if err != nil {
		return [sha256.Size]byte{}, err
	}
	token := strings.TrimSpace(string(data))
	if token == "" {
		return [sha256.Size]byte{}, fmt.Errorf("%s holds no token", t.path)
	}
	t.info, t.sum = fi, sha256.Sum256([]byte(token))
	return t.sum, nil
}
