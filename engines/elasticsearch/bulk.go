package elasticsearch

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"time"

	"github.com/sirupsen/logrus"
)

const (
	bulkMaxBytes   = 8 << 20
	bulkMaxRetries = 10
	bulkMaxBackoff = 10 * time.Second
)

// BulkItemError is a document that _bulk refused with an error other than
// 429 (too many requests): the restore fails with it.
type BulkItemError struct {
	Index  string
	ID     string
	Status int
	Type   string
	Reason string
}

func (e *BulkItemError) Error() string {
	return fmt.Sprintf("bulk: document %s in index %s: HTTP %d: %s: %s", e.ID, e.Index, e.Status, e.Type, e.Reason)
}

// bulkLoader sends documents to one index or data stream with _bulk in
// bounded batches, retrying what the cluster refuses with 429.
type bulkLoader struct {
	c        *client
	log      logrus.FieldLogger
	index    string
	op       string // "index", or "create" for data streams
	maxDocs  int
	backoff  time.Duration
	buf      []byte
	items    []bulkItem
	loaded   int64
	retried  int64
	onLoaded func(n int)
}

type bulkItem struct {
	id         string
	start, end int
}

func (l *bulkLoader) add(ctx context.Context, id, routing string, source json.RawMessage) error {
	action := map[string]map[string]string{l.op: {"_index": l.index, "_id": id}}
	if routing != "" {
		action[l.op]["routing"] = routing
	}
	raw, err := json.Marshal(action)
	if err != nil {
		return err
	}
	start := len(l.buf)
	l.buf = append(l.buf, raw...)
	l.buf = append(l.buf, '\n')
	l.buf = append(l.buf, source...)
	l.buf = append(l.buf, '\n')
	l.items = append(l.items, bulkItem{id: id, start: start, end: len(l.buf)})
	if len(l.items) >= l.maxDocs || len(l.buf) >= bulkMaxBytes {
		return l.flush(ctx)
	}
	return nil
}

type bulkResponse struct {
	Errors bool                          `json:"errors"`
	Items  []map[string]bulkItemResponse `json:"items"`
}

type bulkItemResponse struct {
	Index  string `json:"_index"`
	ID     string `json:"_id"`
	Status int    `json:"status"`
	Error  *struct {
		Type   string `json:"type"`
		Reason string `json:"reason"`
	} `json:"error"`
}

// flush sends the pending documents. Documents refused with 429 are sent
// again, alone, after a growing pause; any other refusal fails.
func (l *bulkLoader) flush(ctx context.Context) error {
	pending := l.items
	total := len(pending)
	for attempt := 0; len(pending) > 0; attempt++ {
		body := make([]byte, 0, len(l.buf))
		for _, it := range pending {
			body = append(body, l.buf[it.start:it.end]...)
		}
		var r bulkResponse
		err := l.c.request(ctx, http.MethodPost, "/_bulk", nil, ndjson(body), &r)
		switch {
		case isStatus(err, http.StatusTooManyRequests) || isStatus(err, http.StatusServiceUnavailable):
			// The whole request was refused: send it all again.
		case err != nil:
			return fmt.Errorf("index %s: %w", l.index, err)
		case len(r.Items) != len(pending):
			return fmt.Errorf("index %s: bulk answered %d items for %d documents", l.index, len(r.Items), len(pending))
		default:
			var retry []bulkItem
			for i, item := range r.Items {
				res, ok := item[l.op]
				if !ok || len(item) != 1 {
					return fmt.Errorf("index %s: bulk answered an item without %q", l.index, l.op)
				}
				switch {
				case res.Status == http.StatusTooManyRequests:
					retry = append(retry, pending[i])
				case res.Status < 200 || res.Status > 299 || res.Error != nil:
					e := &BulkItemError{Index: l.index, ID: pending[i].id, Status: res.Status}
					if res.Error != nil {
						e.Type, e.Reason = res.Error.Type, res.Error.Reason
					}
					return e
				}
			}
			pending = retry
		}
		if len(pending) == 0 {
			break
		}
		if attempt >= bulkMaxRetries {
			return fmt.Errorf("index %s: bulk: %d documents still refused with 429 after %d retries (first: %s)", l.index, len(pending), bulkMaxRetries, pending[0].id)
		}
		l.retried += int64(len(pending))
		wait := l.backoff << attempt
		if wait > bulkMaxBackoff || wait <= 0 {
			wait = bulkMaxBackoff
		}
		l.log.WithFields(logrus.Fields{"index": l.index, "documents": len(pending), "attempt": attempt + 1, "wait_ms": wait.Milliseconds()}).Info("bulk: retrying documents refused with 429")
		if err := sleep(ctx, wait); err != nil {
			return err
		}
	}
	l.loaded += int64(total)
	if l.onLoaded != nil {
		l.onLoaded(total)
	}
	l.buf = l.buf[:0]
	l.items = l.items[:0]
	return nil
}
