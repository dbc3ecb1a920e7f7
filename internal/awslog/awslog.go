// Package awslog routes the AWS SDK's own log lines (its warnings about
// checksums, clock headers, retries) through capsule's logrus logger, so
// a worker that logs JSON writes only JSON: without it the SDK prints
// "SDK 2026/01/02 15:04:05 WARN ..." lines straight to stderr.
package awslog

import (
	"fmt"

	"github.com/aws/smithy-go/logging"
	"github.com/sirupsen/logrus"
)

// Logger adapts a logrus logger to the SDK's logging.Logger. The SDK's
// Warn becomes a logrus warning, its Debug a logrus debug line, each with
// the field component=aws-sdk. A nil log discards everything.
func Logger(log logrus.FieldLogger) logging.Logger {
	if log == nil {
		return logging.Nop{}
	}
	return adapter{log.WithField("component", "aws-sdk")}
}

type adapter struct{ log logrus.FieldLogger }

func (a adapter) Logf(c logging.Classification, format string, v ...any) {
	msg := fmt.Sprintf(format, v...)
	switch c {
	case logging.Warn:
		a.log.Warn(msg)
	default:
		a.log.Debug(msg)
	}
}
