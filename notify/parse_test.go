package notify_test

import (
	"errors"
	"reflect"
	"testing"

	"github.com/cnvrg/capsule/internal/sqstest"
	"github.com/cnvrg/capsule/notify"
)

// Message bodies as each sender writes them (shapes from AWS's
// documentation of the S3 event message structure, MinIO's bucket
// notification events, and versitygw's s3event package).
const (
	awsPut = `{"Records":[{"eventVersion":"2.1","eventSource":"aws:s3","awsRegion":"us-east-1",
"eventTime":"2024-05-01T12:00:00.000Z","eventName":"ObjectCreated:Put",
"userIdentity":{"principalId":"AWS:AIDAEXAMPLE"},"requestParameters":{"sourceIPAddress":"203.0.113.7"},
"responseElements":{"x-amz-request-id":"C3D13FE58DE4C810","x-amz-id-2":"FMyUVURIY8/IgAtTv8xRjskZQpcIZ9KG4V5Wp6S7S/JRWeUWerMUE5JgHvANOjpD"},
"s3":{"s3SchemaVersion":"1.0","configurationId":"capsule-requests",
"bucket":{"name":"backups","ownerIdentity":{"principalId":"A3NL1KOZZKExample"},"arn":"arn:aws:s3:::backups"},
"object":{"key":"capsule/requests/01hzx5t8k2.json","size":212,"eTag":"d41d8cd98f00b204e9800998ecf8427e","sequencer":"0055AED6DCD90281E5"}}}]}`

	awsSpaces = `{"Records":[{"eventVersion":"2.1","eventSource":"aws:s3","eventName":"ObjectCreated:CompleteMultipartUpload",
"s3":{"bucket":{"name":"backups"},"object":{"key":"my+reports/q1%2B2.json","size":5,"eTag":"abc-2"}}}]}`

	awsTwoRecords = `{"Records":[
{"eventVersion":"2.1","eventSource":"aws:s3","eventName":"ObjectCreated:Put","s3":{"bucket":{"name":"backups"},"object":{"key":"capsule/requests/a1.json","eTag":"e1"}}},
{"eventVersion":"2.1","eventSource":"aws:s3","eventName":"ObjectRemoved:Delete","s3":{"bucket":{"name":"backups"},"object":{"key":"capsule/requests/a0.json"}}}]}`

	awsTest = `{"Service":"Amazon S3","Event":"s3:TestEvent","Time":"2024-05-01T12:00:00.000Z","Bucket":"backups","RequestId":"5582815E1AEA5ADF","HostId":"8cLeGAmw098X5cv4Zkwcmo8vvZa3eH3eKxsPzbB9wrR+YstdA6Knx4Ip8EXAMPLE"}`

	snsWrapped = `{"Type":"Notification","MessageId":"2a7a8c7e-0b5e-5d1f-9e2f-6a8f1b0e9c11",
"TopicArn":"arn:aws:sns:us-east-1:123456789012:capsule-requests","Subject":"Amazon S3 Notification",
"Message":"{\"Records\":[{\"eventVersion\":\"2.1\",\"eventSource\":\"aws:s3\",\"eventName\":\"ObjectCreated:Put\",\"s3\":{\"bucket\":{\"name\":\"backups\"},\"object\":{\"key\":\"capsule/requests/01hzx5t8k3.json\",\"size\":200,\"eTag\":\"0123456789abcdef0123456789abcdef\"}}}]}",
"Timestamp":"2024-05-01T12:00:00.123Z","SignatureVersion":"1","Signature":"EXAMPLE","SigningCertURL":"https://sns.us-east-1.amazonaws.com/x.pem","UnsubscribeURL":"https://sns.us-east-1.amazonaws.com/?Action=Unsubscribe"}`

	snsTest = `{"Type":"Notification","MessageId":"1","TopicArn":"arn:aws:sns:us-east-1:123456789012:t","Message":"{\"Service\":\"Amazon S3\",\"Event\":\"s3:TestEvent\",\"Bucket\":\"backups\"}"}`

	minioPut = `{"EventName":"s3:ObjectCreated:Put","Key":"backups/capsule/requests/01hzx5t8k4.json",
"Records":[{"eventVersion":"2.0","eventSource":"minio:s3","awsRegion":"","eventTime":"2024-05-01T12:00:00.000Z",
"eventName":"s3:ObjectCreated:Put","userIdentity":{"principalId":"minioadmin"},
"requestParameters":{"principalId":"minioadmin","region":"","sourceIPAddress":"127.0.0.1"},
"responseElements":{"content-length":"0","x-amz-id-2":"dd9025bab4ad464b049177c95eb6ebf374d3b3fd1af9251148b658df7ac2e3e8","x-amz-request-id":"17C9F0D3E1A6B4A2","x-minio-deployment-id":"6a5b","x-minio-origin-endpoint":"http://127.0.0.1:9000"},
"s3":{"s3SchemaVersion":"1.0","configurationId":"Config","bucket":{"name":"backups","ownerIdentity":{"principalId":"minioadmin"},"arn":"arn:aws:s3:::backups"},
"object":{"key":"capsule%2Frequests%2F01hzx5t8k4.json","size":211,"eTag":"9b2cf535f27731c974343645a3985328","contentType":"application/json","userMetadata":{"content-type":"application/json"},"sequencer":"17C9F0D3E1C2B0D8"}},
"source":{"host":"127.0.0.1","port":"","userAgent":"aws-sdk-go-v2/1.30.0"}}]}`

	minioSummaryOnly = `{"EventName":"s3:ObjectCreated:Put","Key":"backups/capsule/requests/01hzx5t8k5.json"}`

	versitygwPut = `{"Records":[{"eventVersion":"2.2","eventSource":"aws:s3","awsRegion":"us-east-1",
"eventTime":"2024-05-01T12:00:00Z","eventName":"s3:ObjectCreated:Put","userIdentity":{"PrincipalId":"capsule"},
"requestParameters":{"sourceIPAddress":"127.0.0.1"},"responseElements":{"x-amz-request-id":"","x-amz-id-2":""},
"s3":{"s3SchemaVersion":"1.0","configurationId":"","bucket":{"name":"backups","ownerIdentity":{"PrincipalId":"capsule"},"arn":"arn:aws:s3:::backups/capsule/requests/01hzx5t8k6.json"},
"object":{"key":"capsule/requests/01hzx5t8k6.json","size":209,"eTag":"\"5d41402abc4b2a76b9719d911017c592\"","versionId":null,"sequencer":"17C9F0D3E1C2B0D9"}},
"glacierEventData":{"restoreEventData":{"lifecycleRestorationExpiryTime":"","lifecycleRestoreStorageClass":""}}}]}`

	versitygwTest = `{"Bucket":"Test-Bucket","Event":"s3:TestEvent","Service":"S3","Time":"2024-05-01T12:00:00Z"}`
)

func TestParseMessage(t *testing.T) {
	put := func(bucket, key, raw, etag string, size int64) notify.Ref {
		return notify.Ref{Bucket: bucket, Key: key, RawKey: raw, Event: "ObjectCreated:Put", ETag: etag, Size: size}
	}
	cases := []struct {
		name string
		body string
		want []notify.Ref
	}{
		{"aws put", awsPut, []notify.Ref{put("backups", "capsule/requests/01hzx5t8k2.json", "capsule/requests/01hzx5t8k2.json", "d41d8cd98f00b204e9800998ecf8427e", 212)}},
		{"aws plus is a space, %2B a plus", awsSpaces, []notify.Ref{{Bucket: "backups", Key: "my reports/q1+2.json", RawKey: "my+reports/q1%2B2.json", Event: "ObjectCreated:CompleteMultipartUpload", ETag: "abc-2", Size: 5}}},
		{"aws two records", awsTwoRecords, []notify.Ref{
			put("backups", "capsule/requests/a1.json", "capsule/requests/a1.json", "e1", 0),
			{Bucket: "backups", Key: "capsule/requests/a0.json", RawKey: "capsule/requests/a0.json", Event: "ObjectRemoved:Delete"},
		}},
		{"aws test event", awsTest, nil},
		{"sns wrapped", snsWrapped, []notify.Ref{put("backups", "capsule/requests/01hzx5t8k3.json", "capsule/requests/01hzx5t8k3.json", "0123456789abcdef0123456789abcdef", 200)}},
		{"sns wrapped test event", snsTest, nil},
		{"minio percent-escaped", minioPut, []notify.Ref{put("backups", "capsule/requests/01hzx5t8k4.json", "capsule%2Frequests%2F01hzx5t8k4.json", "9b2cf535f27731c974343645a3985328", 211)}},
		{"minio summary only", minioSummaryOnly, []notify.Ref{put("backups", "capsule/requests/01hzx5t8k5.json", "capsule/requests/01hzx5t8k5.json", "", 0)}},
		{"versitygw raw key, quoted etag", versitygwPut, []notify.Ref{put("backups", "capsule/requests/01hzx5t8k6.json", "capsule/requests/01hzx5t8k6.json", "5d41402abc4b2a76b9719d911017c592", 209)}},
		{"versitygw test event", versitygwTest, nil},
		{"no records", `{"Records":[]}`, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := notify.ParseMessage(c.body)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, c.want) {
				t.Fatalf("got  %+v\nwant %+v", got, c.want)
			}
		})
	}
}

func TestParseMessageRefusesWhatIsNotAnEvent(t *testing.T) {
	for name, body := range map[string]string{
		"not json":       "requests/abc.json",
		"other json":     `{"hello":"world"}`,
		"a json array":   `[1,2]`,
		"record no key":  `{"Records":[{"eventName":"ObjectCreated:Put","s3":{"bucket":{"name":"b"}}}]}`,
		"sns in sns":     `{"Type":"Notification","Message":"{\"Type\":\"Notification\",\"Message\":\"{}\"}"}`,
		"sns of garbage": `{"Type":"Notification","Message":"nope"}`,
		"minio bad Key":  `{"EventName":"s3:ObjectCreated:Put","Key":"nobucket"}`,
	} {
		t.Run(name, func(t *testing.T) {
			refs, err := notify.ParseMessage(body)
			if err == nil {
				t.Fatalf("ParseMessage = %+v, want an error", refs)
			}
			if name == "other json" && !errors.Is(err, notify.ErrNotAnEvent) {
				t.Errorf("error %v is not ErrNotAnEvent", err)
			}
		})
	}
}

func TestIDs(t *testing.T) {
	created := func(bucket, key string) notify.Ref {
		return notify.Ref{Bucket: bucket, Key: key, RawKey: key, Event: "ObjectCreated:Put"}
	}
	refs := []notify.Ref{
		created("backups", "capsule/requests/b2.json"),
		created("backups", "capsule/requests/a1.json"),
		created("backups", "capsule/requests/b2.json"),                                      // duplicate
		created("other", "capsule/requests/c3.json"),                                        // another bucket
		created("backups", "elsewhere/requests/d4.json"),                                    // another prefix
		created("backups", "capsule/leases/e5.json"),                                        // not a request
		created("backups", "capsule/requests/Bad_ID.json"),                                  // not an id
		created("backups", "capsule/requests/sub/f6.json"),                                  // not directly under requests/
		{Bucket: "backups", Key: "capsule/requests/g7.json", Event: "ObjectRemoved:Delete"}, // not a creation
		// A raw key whose decoding differs (versitygw sends keys as they
		// are): the raw form still matches.
		{Bucket: "backups", Key: "capsule/requests/h 8.json", RawKey: "capsule/requests/h8.json", Event: "ObjectCreated:Put"},
	}
	got := notify.IDs(refs, "backups", "capsule/")
	if want := []string{"b2", "a1", "h8"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("IDs = %v, want %v", got, want)
	}
	if got := notify.IDs(refs, "", "capsule/"); !reflect.DeepEqual(got, []string{"b2", "a1", "c3", "h8"}) {
		t.Fatalf("IDs in any bucket = %v", got)
	}
	// A prefix with a '+' sent raw.
	raw := []notify.Ref{{Bucket: "b", Key: "x y/requests/i9.json", RawKey: "x+y/requests/i9.json", Event: "ObjectCreated:Put"}}
	if got := notify.IDs(raw, "b", "x+y/"); !reflect.DeepEqual(got, []string{"i9"}) {
		t.Fatalf("IDs with a raw '+' prefix = %v", got)
	}
}

// Every format the test bridge sends parses back to the key it was given.
func TestBridgeFormatsRoundTrip(t *testing.T) {
	for _, f := range sqstest.Formats {
		for _, key := range []string{"capsule/requests/01abc.json", "odd prefix+/requests/x.y-z_1.json"} {
			refs, err := notify.ParseMessage(sqstest.S3Event(f, "bkt", key, "etag1"))
			if err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			if len(refs) != 1 || (refs[0].Key != key && refs[0].RawKey != key) || refs[0].ETag != "etag1" || !refs[0].Created() || refs[0].Bucket != "bkt" {
				t.Errorf("%s %q: %+v", f, key, refs)
			}
		}
	}
}
