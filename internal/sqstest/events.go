package sqstest

import (
	"encoding/json"
	"fmt"
	"net/url"
	"strings"
	"time"
)

// Format is a sender of S3 event notifications. No S3 server here sends
// to SQS, so tests play the server: they write an object, then send the
// message the server would have sent (S3Event), the way a small bridge
// from a server's webhook to the queue would.
type Format string

// The formats.
const (
	// AWS: eventName "ObjectCreated:Put", the key URL-encoded ('+' for a
	// space, '/' kept), a bare ETag.
	AWS Format = "aws"
	// MinIO: "s3:ObjectCreated:Put", the key query-escaped ('/' as %2F),
	// a bare ETag, EventName and "<bucket>/<key>" also at the top.
	MinIO Format = "minio"
	// Versitygw: "s3:ObjectCreated:Put", the raw key, a quoted ETag.
	Versitygw Format = "versitygw"
	// SNS: the AWS event inside an SNS notification (a topic forwarding
	// to the queue without raw message delivery).
	SNS Format = "sns"
)

// Formats lists every format.
var Formats = []Format{AWS, MinIO, Versitygw, SNS}

// S3Event returns the body of the message f's server sends when key is
// written to bucket.
func S3Event(f Format, bucket, key, etag string) string {
	now := time.Now().UTC()
	record := func(source, version, name, k, tag string) map[string]any {
		return map[string]any{
			"eventVersion": version,
			"eventSource":  source,
			"awsRegion":    "us-east-1",
			"eventTime":    now.Format("2006-01-02T15:04:05.000Z"),
			"eventName":    name,
			"userIdentity": map[string]any{"principalId": "capsuletest"},
			"requestParameters": map[string]any{
				"sourceIPAddress": "127.0.0.1",
			},
			"responseElements": map[string]any{
				"x-amz-request-id": "0123456789ABCDEF",
				"x-amz-id-2":       "capsuletest",
			},
			"s3": map[string]any{
				"s3SchemaVersion": "1.0",
				"configurationId": "capsule-requests",
				"bucket": map[string]any{
					"name":          bucket,
					"ownerIdentity": map[string]any{"principalId": "capsuletest"},
					"arn":           "arn:aws:s3:::" + bucket,
				},
				"object": map[string]any{
					"key":       k,
					"size":      123,
					"eTag":      tag,
					"sequencer": fmt.Sprintf("%016X", now.UnixNano()),
				},
			},
		}
	}
	awsKey := strings.ReplaceAll(url.QueryEscape(key), "%2F", "/")
	var v any
	switch f {
	case AWS:
		v = map[string]any{"Records": []any{record("aws:s3", "2.1", "ObjectCreated:Put", awsKey, etag)}}
	case MinIO:
		v = map[string]any{
			"EventName": "s3:ObjectCreated:Put",
			"Key":       bucket + "/" + key,
			"Records":   []any{record("minio:s3", "2.0", "s3:ObjectCreated:Put", url.QueryEscape(key), etag)},
		}
	case Versitygw:
		v = map[string]any{"Records": []any{record("aws:s3", "2.2", "s3:ObjectCreated:Put", key, `"`+etag+`"`)}}
	case SNS:
		inner := S3Event(AWS, bucket, key, etag)
		v = map[string]any{
			"Type":             "Notification",
			"MessageId":        "00000000-0000-0000-0000-000000000000",
			"TopicArn":         "arn:aws:sns:us-east-1:100010001000:capsule-requests",
			"Subject":          "Amazon S3 Notification",
			"Message":          inner,
			"Timestamp":        now.Format(time.RFC3339Nano),
			"SignatureVersion": "1",
		}
	default:
		panic(fmt.Sprintf("sqstest: unknown format %q", f))
	}
	data, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return string(data)
}

// TestEvent is the message S3 sends when notifications are configured.
func TestEvent(bucket string) string {
	data, _ := json.Marshal(map[string]string{
		"Service": "Amazon S3", "Event": "s3:TestEvent", "Time": time.Now().UTC().Format(time.RFC3339),
		"Bucket": bucket, "RequestId": "0123456789ABCDEF", "HostId": "capsuletest",
	})
	return string(data)
}
