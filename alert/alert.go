// Package alert sends webhook notifications where no Prometheus runs: a
// JSON POST when a request failed, a scheduled backup was missed, or a
// verification failed.
//
// The body is Slack-compatible (a "text" line that Slack, Mattermost,
// Rocket.Chat and Teams' Slack connector show as is) with the event's
// fields beside it for any other receiver:
//
//	{"text": "capsule: Backup of db failed (cluster prod, request 01J…): pg_dump: connection refused",
//	 "event": "failed", "cluster": "prod", "source": "db", "kind": "Backup",
//	 "request_id": "01J…", "error": "pg_dump: connection refused", "time": "2026-…Z"}
//
// Every string passes internal/redact first: an error that quotes a
// connection URL with its password never leaves the worker with it. A
// webhook's URL, which for Slack is itself a secret, is never logged
// beyond its host. A failed POST (a network error, 429 or 5xx) is
// retried with exponential backoff for up to Options.MaxElapsed; other
// answers are final. Sending never blocks the caller.
package alert

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/sirupsen/logrus"

	"github.com/cnvrg/capsule/internal/redact"
)

// The event types a webhook may subscribe to.
const (
	// Failed: a request ended failed (any kind but a verification).
	Failed = "failed"
	// VerifyFailed: a verification ended failed: the backup could not
	// be proven restorable.
	VerifyFailed = "verify-failed"
	// Missed: a scheduled backup did not happen.
	Missed = "missed"
)

// Types lists the event types.
var Types = []string{Failed, VerifyFailed, Missed}

// Hook is one webhook.
type Hook struct {
	// URL receives the POSTs.
	URL string
	// Events it is sent; all when empty.
	Events []string
	// Sources limits it to events about these sources; all when empty.
	Sources []string
}

// Event is what happened.
type Event struct {
	Type      string    `json:"event"`
	Cluster   string    `json:"cluster,omitempty"`
	Source    string    `json:"source,omitempty"`
	Kind      string    `json:"kind,omitempty"`
	RequestID string    `json:"request_id,omitempty"`
	Worker    string    `json:"worker,omitempty"`
	Error     string    `json:"error,omitempty"`
	Time      time.Time `json:"time"`
}

// Options configure a Notifier.
type Options struct {
	// MaxElapsed bounds the retries of one POST (default 2 minutes).
	MaxElapsed time.Duration
	// InitialInterval is the first retry's delay (default 1s).
	InitialInterval time.Duration
	// Timeout of one POST (default 10s).
	Timeout time.Duration
	Log     logrus.FieldLogger
}

// Notifier sends events to the hooks that want them.
type Notifier struct {
	hooks  []Hook
	opts   Options
	client *http.Client
	log    logrus.FieldLogger
	wg     sync.WaitGroup
	ctx    context.Context
	stop   context.CancelFunc
}

// New returns a Notifier for hooks, checking their URLs.
func New(hooks []Hook, o Options) (*Notifier, error) {
	for i, h := range hooks {
		if err := CheckURL(h.URL); err != nil {
			return nil, fmt.Errorf("webhook %d: %w", i+1, err)
		}
		for _, e := range h.Events {
			if !slices.Contains(Types, e) {
				return nil, fmt.Errorf("webhook %d: event %q is not one of %s", i+1, e, strings.Join(Types, ", "))
			}
		}
	}
	if o.MaxElapsed <= 0 {
		o.MaxElapsed = 2 * time.Minute
	}
	if o.InitialInterval <= 0 {
		o.InitialInterval = time.Second
	}
	if o.Timeout <= 0 {
		o.Timeout = 10 * time.Second
	}
	if o.Log == nil {
		l := logrus.New()
		l.Out = io.Discard
		o.Log = l
	}
	ctx, stop := context.WithCancel(context.Background())
	return &Notifier{hooks: hooks, opts: o, client: &http.Client{Timeout: o.Timeout}, log: o.Log, ctx: ctx, stop: stop}, nil
}

// CheckURL refuses what is not an http(s) URL with a host.
func CheckURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return errors.New("url: want http(s)://HOST/PATH")
	}
	return nil
}

// Len is the number of hooks.
func (n *Notifier) Len() int {
	if n == nil {
		return 0
	}
	return len(n.hooks)
}

// Notify sends ev, in the background, to every hook that wants it.
func (n *Notifier) Notify(ev Event) {
	if n == nil {
		return
	}
	if ev.Time.IsZero() {
		ev.Time = time.Now()
	}
	ev.Time = ev.Time.UTC()
	ev.Cluster, ev.Source, ev.RequestID, ev.Worker = redact.String(ev.Cluster), redact.String(ev.Source), redact.String(ev.RequestID), redact.String(ev.Worker)
	ev.Error = redact.String(ev.Error)
	body, err := json.Marshal(payload(ev))
	if err != nil {
		n.log.WithError(err).Error("webhook: cannot encode the event")
		return
	}
	for _, h := range n.hooks {
		if !wants(h, ev) {
			continue
		}
		n.wg.Add(1)
		go func() {
			defer n.wg.Done()
			n.send(h.URL, ev, body)
		}()
	}
}

// Close waits up to ctx for the POSTs in flight, then abandons them.
func (n *Notifier) Close(ctx context.Context) {
	if n == nil {
		return
	}
	done := make(chan struct{})
	go func() { n.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		n.stop()
		<-done
	}
	n.stop()
}

func wants(h Hook, ev Event) bool {
	if len(h.Events) > 0 && !slices.Contains(h.Events, ev.Type) {
		return false
	}
	return len(h.Sources) == 0 || slices.Contains(h.Sources, ev.Source)
}

// payload is the body: the Slack-compatible text and the event's fields.
func payload(ev Event) map[string]any {
	raw, _ := json.Marshal(ev)
	var m map[string]any
	_ = json.Unmarshal(raw, &m)
	m["text"] = Text(ev)
	return m
}

// Text is the event's one-line summary.
func Text(ev Event) string {
	var b strings.Builder
	b.WriteString("capsule: ")
	what := ev.Kind
	if what == "" {
		what = "Request"
	}
	switch ev.Type {
	case Missed:
		fmt.Fprintf(&b, "scheduled backup of %s was missed", ev.Source)
	case VerifyFailed:
		fmt.Fprintf(&b, "verification of %s failed", ev.Source)
	default:
		fmt.Fprintf(&b, "%s of %s failed", what, ev.Source)
	}
	var ctx []string
	if ev.Cluster != "" {
		ctx = append(ctx, "cluster "+ev.Cluster)
	}
	if ev.RequestID != "" {
		ctx = append(ctx, "request "+ev.RequestID)
	}
	if len(ctx) > 0 {
		b.WriteString(" (" + strings.Join(ctx, ", ") + ")")
	}
	if ev.Error != "" {
		line, _, _ := strings.Cut(ev.Error, "\n")
		b.WriteString(": " + line)
	}
	return b.String()
}

func (n *Notifier) send(rawURL string, ev Event, body []byte) {
	host := rawURL
	if u, err := url.Parse(rawURL); err == nil {
		host = u.Host
	}
	log := n.log.WithFields(logrus.Fields{"webhook": host, "event": ev.Type, "source": ev.Source, "request_id": ev.RequestID})
	bo := backoff.NewExponentialBackOff()
	bo.InitialInterval, bo.MaxElapsedTime = n.opts.InitialInterval, n.opts.MaxElapsed
	attempt := 0
	err := backoff.RetryNotify(func() error {
		attempt++
		return n.post(rawURL, body)
	}, backoff.WithContext(bo, n.ctx), func(err error, wait time.Duration) {
		log.WithError(err).WithFields(logrus.Fields{"attempt": attempt, "retry_in": wait.String()}).Warn("webhook failed; will retry")
	})
	if err != nil {
		log.WithError(err).WithField("attempt", attempt).Error("webhook not delivered")
		return
	}
	log.WithField("attempt", attempt).Info("webhook delivered")
}

func (n *Notifier) post(rawURL string, body []byte) error {
	req, err := http.NewRequestWithContext(n.ctx, http.MethodPost, rawURL, bytes.NewReader(body))
	if err != nil {
		return backoff.Permanent(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "capsule")
	res, err := n.client.Do(req)
	if err != nil {
		// The URL may be quoted in a *url.Error: keep only the cause.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return err
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(res.Body, 64<<10))
	res.Body.Close()
	switch {
	case res.StatusCode < 300:
		return nil
	case res.StatusCode == http.StatusTooManyRequests || res.StatusCode >= 500:
		return fmt.Errorf("answered %s", res.Status)
	}
	return backoff.Permanent(fmt.Errorf("answered %s", res.Status))
}
