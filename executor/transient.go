package executor

import (
	"context"
	"errors"
	"net"
	"strings"
	"syscall"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/sirupsen/logrus"

	"github.com/cnvrg/capsule/bucket"
	"github.com/cnvrg/capsule/engines"
)

// DefaultDataRetries is how many times a run is retried, within one
// attempt, after its data service failed transiently.
const DefaultDataRetries = 3

// transientMarks are what the client programs and drivers print when the
// service went away or is not ready yet: pg_dump and pg_restore's libpq,
// MySQL's and Redis' clients. Their errors reach capsule as text.
var transientMarks = []string{
	"connection refused",
	"connection reset by peer",
	"broken pipe",
	"server closed the connection unexpectedly",
	"terminating connection due to administrator command",
	"the database system is starting up",
	"the database system is shutting down",
	"the database system is in recovery mode",
	"could not connect to server",
	"lost connection to mysql server",
	"mysql server has gone away",
	"can't connect to mysql server",
	"can't connect to local mysql server",
	"loading redis is loading the dataset in memory",
	"i/o timeout",
}

// pgTransient are PostgreSQL's SQLSTATEs of a connection that failed or a
// server that is going down or not up yet.
var pgTransient = map[string]bool{
	"08000": true, "08001": true, "08003": true, "08004": true, "08006": true,
	"57P01": true, "57P02": true, "57P03": true,
}

// DataTransient says whether err is a passing failure of the data service
// (refused or dropped connections, a server restarting), after which the
// same run may well succeed. Cancellation, timeouts of the run, damaged
// artifacts, rejections and the bucket's own errors (which have their
// retries) are not.
func DataTransient(err error) bool {
	if err == nil || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) ||
		IsRejected(err) || errors.Is(err, bucket.ErrTransient) {
		return false
	}
	var ce *engines.ChecksumError
	if errors.As(err, &ce) {
		return false
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pgTransient[pe.Code]
	}
	if dialFailure(err) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) {
		return true
	}
	msg := strings.ToLower(err.Error())
	for _, m := range transientMarks {
		if strings.Contains(msg, m) {
			return true
		}
	}
	return false
}

// dialFailure says whether err is a failure to connect at all (refused,
// unresolvable, unreachable): nothing was sent to the service.
func dialFailure(err error) bool {
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		return true
	}
	var dns *net.DNSError
	if errors.As(err, &dns) {
		return true
	}
	var ce *pgconn.ConnectError
	return errors.As(err, &ce) || errors.Is(err, syscall.ECONNREFUSED)
}

// withDataRetry runs op and, while it fails with an error retryable
// judges transient, runs it again after an exponential backoff, up to
// DataRetries times, logging each retry. The last error is returned.
func (x *Executor) withDataRetry(ctx context.Context, log logrus.FieldLogger, what string, retryable func(error) bool, op func() error) error {
	bo := backoff.NewExponentialBackOff()
	bo.InitialInterval, bo.MaxInterval, bo.MaxElapsedTime = x.cfg.DataRetryInterval, 30*time.Second, 0
	tries := 0
	return backoff.RetryNotify(func() error {
		tries++
		err := op()
		if err == nil || tries > x.cfg.DataRetries || !retryable(err) {
			return backoff.Permanent(err)
		}
		return err
	}, backoff.WithContext(bo, ctx), func(err error, wait time.Duration) {
		log.WithError(err).WithFields(logrus.Fields{"retry": tries, "of": x.cfg.DataRetries, "retry_in": wait.String()}).
			Warn(what + " failed on a passing fault of the data service; retrying")
	})
}
