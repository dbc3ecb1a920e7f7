package engines

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"hash"
	"io"
)

// NewVerifyingReader wraps r, the stored bytes of artifact name, so that the
// Read that reaches the end returns a *ChecksumError instead of io.EOF
// unless exactly size bytes with the given hex sha256 went through.
func NewVerifyingReader(r io.Reader, name, sha string, size int64) io.Reader {
	return &verifyingReader{r: r, name: name, want: sha, size: size, h: sha256.New()}
}

type verifyingReader struct {
	r    io.Reader
	name string
	want string
	size int64
	n    int64
	h    hash.Hash
	err  error
}

func (v *verifyingReader) Read(p []byte) (int, error) {
	if v.err != nil {
		return 0, v.err
	}
	n, err := v.r.Read(p)
	v.n += int64(n)
	v.h.Write(p[:n])
	if v.n > v.size {
		v.err = &ChecksumError{Artifact: v.name, WantSize: v.size, GotSize: v.n, SizeDiffer: true}
		return n, v.err
	}
	if errors.Is(err, io.EOF) {
		if v.n != v.size {
			v.err = &ChecksumError{Artifact: v.name, WantSize: v.size, GotSize: v.n, SizeDiffer: true}
			return n, v.err
		}
		if got := hex.EncodeToString(v.h.Sum(nil)); got != v.want {
			v.err = &ChecksumError{Artifact: v.name, Want: v.want, Got: got, WantSize: v.size, GotSize: v.n}
			return n, v.err
		}
		v.err = io.EOF
	} else if err != nil {
		v.err = err
	}
	return n, err
}
