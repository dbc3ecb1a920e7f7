package notify

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"
	"github.com/cenkalti/backoff/v4"
	"github.com/sirupsen/logrus"
)

// API is the part of the SQS client a Listener uses; *sqs.Client is one.
type API interface {
	ReceiveMessage(ctx context.Context, in *sqs.ReceiveMessageInput, opts ...func(*sqs.Options)) (*sqs.ReceiveMessageOutput, error)
	DeleteMessageBatch(ctx context.Context, in *sqs.DeleteMessageBatchInput, opts ...func(*sqs.Options)) (*sqs.DeleteMessageBatchOutput, error)
}

// Observation is something a Listener counts: how a message ended, or an
// SQS call that failed.
type Observation string

// The observations.
const (
	// MessageClaimed: the message named a request of ours and a claim
	// started it here.
	MessageClaimed Observation = "claimed"
	// MessageUnclaimed: it named requests of ours, none claimed here
	// (already held, finished or gone, or this worker was full).
	MessageUnclaimed Observation = "unclaimed"
	// MessageIgnored: it named nothing of ours (other keys, other
	// buckets, other events, S3's test event).
	MessageIgnored Observation = "ignored"
	// MessageInvalid: the body was not an event notification.
	MessageInvalid Observation = "invalid"
	// ReceiveFailed and DeleteFailed: an SQS call failed.
	ReceiveFailed Observation = "receive_failed"
	DeleteFailed  Observation = "delete_failed"
)

// Config configures a Listener.
type Config struct {
	Client API
	// QueueURL is the queue S3 sends the bucket's events to.
	QueueURL string
	// Bucket is the S3 bucket's name; events of other buckets are
	// ignored. Empty accepts any bucket.
	Bucket string
	// Prefix is capsule's prefix in the bucket ("capsule/"), so that
	// <Prefix>requests/<id>.json names request <id>.
	Prefix string
	// Claim is told each request id a message names; it reports whether
	// it claimed it ((*watcher.Watcher).ClaimHint).
	Claim func(ctx context.Context, id string) (bool, error)
	// Observe, when set, is told of every message's outcome and every
	// failed SQS call (metrics hook in here).
	Observe func(Observation)
	// WaitTime is the long poll's length (default and most 20s).
	WaitTime time.Duration
	// MaxMessages is how many messages one receive takes (default and
	// most 10).
	MaxMessages int
	// VisibilityTimeout, when set, is how long a received message stays
	// hidden from other receivers (default: the queue's own setting). A
	// message whose receive response was lost on the way (the SDK then
	// retries the receive, and the first attempt's messages stay in
	// flight) comes back after this time.
	VisibilityTimeout time.Duration
	// MaxBackoff caps the wait between failed receives (default 30s).
	MaxBackoff time.Duration
	Log        logrus.FieldLogger
}

// Validate fills defaults and checks the configuration, naming the bad
// setting.
func (c *Config) Validate() error {
	if c.Client == nil || c.Claim == nil {
		return errors.New("notify: Client and Claim are required")
	}
	if c.QueueURL == "" {
		return errors.New("sqs-queue: no queue URL")
	}
	if c.WaitTime == 0 {
		c.WaitTime = 20 * time.Second
	}
	if c.MaxMessages == 0 {
		c.MaxMessages = 10
	}
	if c.MaxBackoff == 0 {
		c.MaxBackoff = 30 * time.Second
	}
	if c.Log == nil {
		l := logrus.New()
		l.SetLevel(logrus.PanicLevel)
		c.Log = l
	}
	switch {
	case c.WaitTime < time.Second || c.WaitTime > 20*time.Second:
		return fmt.Errorf("sqs wait time: must be 1s to 20s (SQS long polling), got %s", c.WaitTime)
	case c.MaxMessages < 1 || c.MaxMessages > 10:
		return fmt.Errorf("sqs max messages: must be 1 to 10, got %d", c.MaxMessages)
	case c.VisibilityTimeout != 0 && (c.VisibilityTimeout < time.Second || c.VisibilityTimeout > 12*time.Hour):
		return fmt.Errorf("sqs visibility timeout: must be 1s to 12h, got %s", c.VisibilityTimeout)
	case c.MaxBackoff < 10*time.Millisecond:
		return fmt.Errorf("sqs max backoff: must be at least 10ms, got %s", c.MaxBackoff)
	}
	return nil
}

// Listener long-polls a queue of S3 event notifications and hands the
// requests they name to Claim.
type Listener struct {
	cfg Config
	log logrus.FieldLogger
}

// New validates cfg and returns a Listener.
func New(cfg Config) (*Listener, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Listener{cfg: cfg, log: cfg.Log.WithField("queue", cfg.QueueURL)}, nil
}

// Run receives and handles messages until ctx is done. A failing queue
// never stops it: it backs off (up to MaxBackoff) and tries again, while
// the watcher's LIST backstop keeps the work going.
func (l *Listener) Run(ctx context.Context) error {
	l.log.WithFields(logrus.Fields{"bucket": l.cfg.Bucket, "prefix": l.cfg.Prefix}).Info("listening for S3 event notifications")
	bo := backoff.NewExponentialBackOff()
	bo.InitialInterval = min(500*time.Millisecond, l.cfg.MaxBackoff)
	bo.MaxInterval = l.cfg.MaxBackoff
	bo.MaxElapsedTime = 0 // never give up
	failing := false
	for ctx.Err() == nil {
		_, err := l.RunOnce(ctx)
		if err == nil {
			if failing {
				l.log.Info("queue reachable again")
				failing = false
			}
			bo.Reset()
			continue
		}
		if ctx.Err() != nil {
			break
		}
		wait := bo.NextBackOff()
		entry := l.log.WithError(err).WithField("retry_in", wait.Round(time.Millisecond).String())
		if !failing {
			entry.Warn("receiving from the queue failed; the LIST backstop keeps working")
			failing = true
		} else {
			entry.Debug("receiving from the queue failed again")
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
		case <-t.C:
		}
	}
	return nil
}

// RunOnce makes one long-poll receive, handles every message it got
// (their requests are claimed concurrently), then deletes them all,
// including those that named nothing of ours. It returns how many
// messages it handled. Messages received as ctx ends are left on the
// queue for another worker.
func (l *Listener) RunOnce(ctx context.Context) (int, error) {
	out, err := l.cfg.Client.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{
		QueueUrl:            aws.String(l.cfg.QueueURL),
		MaxNumberOfMessages: int32(l.cfg.MaxMessages),
		WaitTimeSeconds:     int32(l.cfg.WaitTime / time.Second),
		VisibilityTimeout:   int32(l.cfg.VisibilityTimeout / time.Second),
	})
	if err != nil {
		if ctx.Err() != nil {
			return 0, ctx.Err()
		}
		l.observe(ReceiveFailed)
		return 0, fmt.Errorf("receive from %s: %w", l.cfg.QueueURL, err)
	}
	if len(out.Messages) == 0 {
		return 0, nil
	}
	l.log.WithField("messages", len(out.Messages)).Debug("received notifications")
	var wg sync.WaitGroup
	for _, m := range out.Messages {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l.observe(l.handle(ctx, m))
		}()
	}
	wg.Wait()
	if ctx.Err() != nil {
		return 0, ctx.Err()
	}
	entries := make([]types.DeleteMessageBatchRequestEntry, len(out.Messages))
	for i, m := range out.Messages {
		entries[i] = types.DeleteMessageBatchRequestEntry{Id: aws.String(strconv.Itoa(i)), ReceiptHandle: m.ReceiptHandle}
	}
	del, err := l.cfg.Client.DeleteMessageBatch(ctx, &sqs.DeleteMessageBatchInput{QueueUrl: aws.String(l.cfg.QueueURL), Entries: entries})
	if err != nil {
		l.observe(DeleteFailed)
		return len(out.Messages), fmt.Errorf("delete %d messages from %s: %w", len(entries), l.cfg.QueueURL, err)
	}
	for _, f := range del.Failed {
		l.observe(DeleteFailed)
		l.log.WithFields(logrus.Fields{"code": aws.ToString(f.Code), "reason": aws.ToString(f.Message)}).Warn("deleting a handled message failed; it comes back and is handled again, which is harmless")
	}
	return len(out.Messages), nil
}

// handle claims the requests one message names.
func (l *Listener) handle(ctx context.Context, m types.Message) Observation {
	log := l.log.WithField("message_id", aws.ToString(m.MessageId))
	refs, err := ParseMessage(aws.ToString(m.Body))
	if err != nil {
		log.WithError(err).Warn("ignoring a message that is not an S3 event notification")
		return MessageInvalid
	}
	ids := IDs(refs, l.cfg.Bucket, l.cfg.Prefix)
	if len(ids) == 0 {
		log.WithField("objects", len(refs)).Debug("message names no request of ours")
		return MessageIgnored
	}
	outcome := MessageUnclaimed
	for _, id := range ids {
		ok, err := l.cfg.Claim(ctx, id)
		switch {
		case err != nil:
			log.WithError(err).WithField("request_id", id).Warn("claim on notification failed; the backstop finds the request")
		case ok:
			outcome = MessageClaimed
			log.WithField("request_id", id).Debug("claimed on notification")
		default:
			log.WithField("request_id", id).Debug("notification named a request this worker did not claim")
		}
	}
	return outcome
}

func (l *Listener) observe(o Observation) {
	if l.cfg.Observe != nil {
		l.cfg.Observe(o)
	}
}
