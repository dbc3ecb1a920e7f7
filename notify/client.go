package notify

import (
	"context"
	"fmt"
	"net/url"
	"regexp"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/sirupsen/logrus"

	"github.com/cnvrg/capsule/internal/awslog"
)

// awsHost matches the hosts of AWS's own queue URLs and captures the
// region: sqs.<region>.amazonaws.com, <region>.queue.amazonaws.com.
var awsHost = regexp.MustCompile(`^(?:sqs\.([a-z0-9-]+)\.amazonaws\.com(?:\.cn)?|([a-z0-9-]+)\.queue\.amazonaws\.com(?:\.cn)?)$`)

// NewClient configures an SQS client for queueURL with the AWS default
// chain (AWS_* environment variables, profiles, web identity, instance
// roles), as the S3 bucket does. An AWS queue URL gives the region when
// the environment names none; any other host (goaws, ElasticMQ, a
// gateway) is used as the endpoint itself, with the configured region or
// us-east-1. The SDK's own log lines go to log (nowhere when nil). It
// does not contact the queue.
func NewClient(ctx context.Context, queueURL string, log logrus.FieldLogger) (*sqs.Client, error) {
	u, err := url.Parse(queueURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || strings.Trim(u.Path, "/") == "" {
		return nil, fmt.Errorf("sqs-queue: %q is not a queue URL: want http(s)://HOST/ACCOUNT/QUEUE", queueURL)
	}
	if u.User != nil {
		return nil, fmt.Errorf("sqs-queue: credentials do not belong in the queue URL: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or use a profile or role)")
	}
	cfg, err := config.LoadDefaultConfig(ctx, config.WithLogger(awslog.Logger(log)))
	if err != nil {
		return nil, fmt.Errorf("sqs-queue: aws configuration: %w", err)
	}
	m := awsHost.FindStringSubmatch(u.Hostname())
	if cfg.Region == "" {
		switch {
		case m != nil && m[1] != "":
			cfg.Region = m[1]
		case m != nil:
			cfg.Region = m[2]
		default:
			cfg.Region = "us-east-1"
		}
	}
	return sqs.NewFromConfig(cfg, func(o *sqs.Options) {
		if m == nil {
			o.BaseEndpoint = aws.String(u.Scheme + "://" + u.Host)
		}
	}), nil
}
