package api

import (
	"context"
	"sync"
	"time"

	"github.com/cnvrg/capsule/bucket"
	"github.com/cnvrg/capsule/index"
	"github.com/sirupsen/logrus"
)

// failureCache holds the failed, canceled and rejected backups of every
// cluster (results are not kept per cluster), read at most ttl ago. One
// read runs at a time; requests that arrive meanwhile wait for it. The
// reader remembers the results it read, so a refresh lists results/ and
// reads only the results written since.
type failureCache struct {
	b      bucket.Reader
	ttl    time.Duration
	reader *index.FailureReader
	log    logrus.FieldLogger

	mu      sync.Mutex
	cur     *failureListing
	lastErr string // the last error logged by clusters, under mu
}

type failureListing struct {
	done chan struct{}
	asOf time.Time
	l    []index.Failure
	err  error
}

func newFailureCache(b bucket.Reader, ttl time.Duration, r *index.FailureReader, log logrus.FieldLogger) *failureCache {
	return &failureCache{b: b, ttl: ttl, reader: r, log: log}
}

// list returns every failure among the newest results, newest first.
func (c *failureCache) list(ctx context.Context) ([]index.Failure, error) {
	c.mu.Lock()
	l := c.cur
	if l == nil || (failureDone(l) && (l.err != nil || time.Since(l.asOf) >= c.ttl)) {
		l = &failureListing{done: make(chan struct{}), asOf: time.Now()}
		c.cur = l
		go func() {
			lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), loadTimeout)
			defer cancel()
			l.l, l.err = c.reader.List(lctx, c.b, index.FailureFilter{})
			close(l.done)
		}()
	}
	c.mu.Unlock()
	select {
	case <-l.done:
		return l.l, l.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// bestEffort is list for the clusters overview: an error (a key that may
// not list results/, say) is logged when it changes, and no failures are
// shown.
func (c *failureCache) bestEffort(ctx context.Context) []index.Failure {
	l, err := c.list(ctx)
	msg := ""
	if err != nil {
		msg = err.Error()
	}
	c.mu.Lock()
	changed := msg != c.lastErr
	c.lastErr = msg
	c.mu.Unlock()
	if err != nil {
		if changed && ctx.Err() == nil {
			c.log.WithError(err).Warn("could not read the results of failed backups: the clusters overview shows none")
		}
		return nil
	}
	return l
}

func failureDone(l *failureListing) bool {
	select {
	case <-l.done:
		return true
	default:
		return false
	}
}
