package notify

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strings"

	"github.com/cnvrg/capsule/requests"
)

// Ref is one object an S3 event notification names.
type Ref struct {
	// Bucket is the S3 bucket's name.
	Bucket string
	// Key is the object's key, unescaped (AWS and MinIO send keys
	// URL-encoded, with '+' for a space); RawKey is the key as sent.
	// Senders that send raw keys (versitygw) give a RawKey that is the
	// key itself, so a reader should try both.
	Key    string
	RawKey string
	// Event is the event's name without the "s3:" some senders put in
	// front: "ObjectCreated:Put", "ObjectRemoved:Delete".
	Event string
	// ETag is the object's ETag without quotes, when the event has one.
	ETag string
	Size int64
}

// Created reports whether the event says the object was written.
func (r Ref) Created() bool { return strings.HasPrefix(r.Event, "ObjectCreated:") }

// ErrNotAnEvent is returned (wrapped) for a message body that is valid
// JSON but not a shape ParseMessage knows.
var ErrNotAnEvent = errors.New("not an S3 event notification")

// message is the union of the shapes a queue delivers. encoding/json
// matches names without regard to case, so every field here is one that
// no other shape uses under a differently cased name.
type message struct {
	// S3's own format (AWS, MinIO, versitygw).
	Records []record `json:"Records"`
	// MinIO adds the event's name and "<bucket>/<key>" at the top.
	EventName string `json:"EventName"`
	Key       string `json:"Key"`
	// SNS, when a topic forwards to the queue without raw delivery: the
	// S3 event is a JSON string in Message.
	Type    string  `json:"Type"`
	Message *string `json:"Message"`
	// The test event S3 sends when notifications are configured:
	// {"Service":"Amazon S3","Event":"s3:TestEvent",...}.
	Service string `json:"Service"`
	Event   string `json:"Event"`
}

type record struct {
	EventSource string `json:"eventSource"`
	EventName   string `json:"eventName"`
	S3          struct {
		Bucket struct {
			Name string `json:"name"`
		} `json:"bucket"`
		Object struct {
			Key  string  `json:"key"`
			Size int64   `json:"size"`
			ETag *string `json:"eTag"`
		} `json:"object"`
	} `json:"s3"`
}

// ParseMessage returns the objects an SQS message body names. It reads S3
// event notifications as AWS sends them (eventName "ObjectCreated:Put",
// keys URL-encoded with '+' for spaces, bare ETags), as MinIO sends them
// ("s3:ObjectCreated:Put", keys percent-escaped including '/', the event
// name and "<bucket>/<key>" also at the top), and as versitygw sends them
// ("s3:ObjectCreated:Put", raw keys, quoted ETags); any of these wrapped
// in an SNS notification; and S3's test event, which names nothing. A body
// that is none of these is an error.
func ParseMessage(body string) ([]Ref, error) {
	return parse(body, 0)
}

func parse(body string, depth int) ([]Ref, error) {
	var m message
	if err := json.Unmarshal([]byte(body), &m); err != nil {
		return nil, fmt.Errorf("message body: %w", err)
	}
	switch {
	case len(m.Records) > 0:
		refs := make([]Ref, 0, len(m.Records))
		for i, r := range m.Records {
			if r.S3.Object.Key == "" {
				return nil, fmt.Errorf("record %d: %w: no s3.object.key", i, ErrNotAnEvent)
			}
			ref := Ref{
				Bucket: r.S3.Bucket.Name,
				RawKey: r.S3.Object.Key,
				Key:    unescapeKey(r.S3.Object.Key),
				Event:  eventName(r.EventName),
				Size:   r.S3.Object.Size,
			}
			if r.S3.Object.ETag != nil {
				ref.ETag = strings.Trim(*r.S3.Object.ETag, `"`)
			}
			refs = append(refs, ref)
		}
		return refs, nil
	case m.Type == "Notification" && m.Message != nil:
		if depth > 0 {
			return nil, fmt.Errorf("%w: an SNS notification inside another", ErrNotAnEvent)
		}
		refs, err := parse(*m.Message, depth+1)
		if err != nil {
			return nil, fmt.Errorf("SNS message: %w", err)
		}
		return refs, nil
	case strings.HasSuffix(m.Event, "TestEvent"):
		return nil, nil
	case m.EventName != "" && m.Key != "":
		// MinIO's top-level summary without records.
		bucket, key, ok := strings.Cut(m.Key, "/")
		if !ok {
			return nil, fmt.Errorf("%w: Key %q is not <bucket>/<key>", ErrNotAnEvent, m.Key)
		}
		return []Ref{{Bucket: bucket, Key: key, RawKey: key, Event: eventName(m.EventName)}}, nil
	case m.Records != nil:
		return nil, nil // an empty list of records names nothing
	}
	return nil, ErrNotAnEvent
}

func eventName(s string) string { return strings.TrimPrefix(s, "s3:") }

// unescapeKey decodes a key sent URL-encoded ("a+b%2Fc" is "a b/c"). A
// key that does not decode is taken as sent.
func unescapeKey(raw string) string {
	k, err := url.QueryUnescape(raw)
	if err != nil {
		return raw
	}
	return k
}

// IDs returns the ids of the requests that refs say were created under
// prefix ("capsule/", as in the bucket URL) in the named bucket (any
// bucket when bucket is empty), each once, in the order named. Other
// objects, other events and other buckets are not ours.
func IDs(refs []Ref, bucket, prefix string) []string {
	var ids []string
	seen := map[string]bool{}
	for _, r := range refs {
		if !r.Created() || (bucket != "" && r.Bucket != bucket) {
			continue
		}
		for _, key := range []string{r.Key, r.RawKey} {
			rel, ok := strings.CutPrefix(key, prefix)
			if !ok {
				continue
			}
			id, ok := requests.IDFromKey(requests.RequestsPrefix, rel)
			if !ok {
				continue
			}
			if !seen[id] {
				seen[id] = true
				ids = append(ids, id)
			}
			break
		}
	}
	return ids
}
