package sqstest

import (
	"context"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
)

func TestSendReceiveDeleteAndStop(t *testing.T) {
	s := Start(t)
	ctx := context.Background()
	q := s.NewQueue(t)
	for _, body := range []string{"one", "two"} {
		if err := s.Send(ctx, q, body); err != nil {
			t.Fatal(err)
		}
	}
	if n, err := s.Depth(ctx, q); n != 2 || err != nil {
		t.Fatalf("Depth = %d, %v; want 2", n, err)
	}
	got := map[string]bool{}
	for len(got) < 2 {
		out, err := s.Client().ReceiveMessage(ctx, &sqs.ReceiveMessageInput{QueueUrl: aws.String(q), MaxNumberOfMessages: 10, WaitTimeSeconds: 1})
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range out.Messages {
			got[aws.ToString(m.Body)] = true
			if _, err := s.Client().DeleteMessage(ctx, &sqs.DeleteMessageInput{QueueUrl: aws.String(q), ReceiptHandle: m.ReceiptHandle}); err != nil {
				t.Fatal(err)
			}
		}
	}
	if !got["one"] || !got["two"] {
		t.Fatalf("received %v", got)
	}
	if n, err := s.Depth(ctx, q); n != 0 || err != nil {
		t.Fatalf("Depth after deletes = %d, %v; want 0", n, err)
	}
	s.Stop()
	if err := s.Send(ctx, q, "after stop"); err == nil {
		t.Fatal("Send succeeded after Stop")
	}
}
