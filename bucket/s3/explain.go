package s3

import (
	"errors"
	"net"
	"strings"
	"syscall"
)

// actionableError names a problem of the client's setup (credentials,
// endpoint) in words a person can act on; the SDK's chain stays behind
// Unwrap for errors.Is and errors.As.
type actionableError struct {
	msg string
	err error
}

func (e *actionableError) Error() string { return e.msg }
func (e *actionableError) Unwrap() error { return e.err }

// explain recognises credential and endpoint problems in an SDK error
// and says what to set; nil when err is none of them. Without it a
// missing credential reads as an EC2 instance-metadata failure
// ("no EC2 IMDS role found, operation error ec2imds: GetMetadata ...").
func explain(err error) error {
	msg := err.Error()
	if strings.Contains(msg, "get identity: ") && strings.Contains(msg, "credentials") {
		return &actionableError{err: err, msg: "no AWS credentials found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE, or give the process a web identity or an instance role); " +
			"the SDK tried the environment, ~/.aws, web identity and the EC2 instance metadata in turn"}
	}
	code, status := errorCode(err)
	switch code {
	case "InvalidAccessKeyId":
		return &actionableError{err: err, msg: "the S3 server does not know the access key (InvalidAccessKeyId): check AWS_ACCESS_KEY_ID (or the profile's) for this endpoint"}
	case "SignatureDoesNotMatch":
		return &actionableError{err: err, msg: "the S3 server refused the request's signature (SignatureDoesNotMatch): check AWS_SECRET_ACCESS_KEY (or the profile's), and that the endpoint is the server itself, not a proxy that rewrites requests"}
	case "AccessDenied", "Forbidden":
		if status == 403 {
			return &actionableError{err: err, msg: "the S3 server refused access (403 " + code + "): check the credentials (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or the profile or role) and the bucket's policy"}
		}
	}
	var dns *net.DNSError
	if errors.As(err, &dns) {
		return &actionableError{err: err, msg: "cannot resolve the S3 endpoint's host " + dns.Name + ": check the bucket URL's endpoint= (or its region) and the worker's DNS"}
	}
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		addr := ""
		if op.Addr != nil {
			addr = " " + op.Addr.String()
		}
		why := "the connection failed: " + op.Err.Error()
		switch {
		case errors.Is(err, syscall.ECONNREFUSED):
			why = "nothing listens there (connection refused)"
		case op.Timeout():
			why = "the connection timed out"
		}
		return &actionableError{err: err, msg: "cannot reach the S3 endpoint" + addr + ": " + why + ": check the bucket URL's endpoint= and that the server runs and is reachable from here"}
	}
	return nil
}
