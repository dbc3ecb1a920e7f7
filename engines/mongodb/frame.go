package mongodb

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strings"

	"github.com/cnvrg/capsule/engines"
	"go.mongodb.org/mongo-driver/bson"
)

// FormatV1 is the format of a backup's artifacts (see the package doc).
const FormatV1 = "mongodb-bson/v1"

// Record kinds of the framed stream.
const (
	kindHeader     = 'H'
	kindCollection = 'C'
	kindDocument   = 'D'
	kindEnd        = 'E'
	kindDBEnd      = 'Z'
)

// maxRecord bounds one record: MongoDB's 16 MiB document limit and room
// for a collection header with many indexes.
const maxRecord = 16<<20 + 1<<20

type frameWriter struct{ w *bufio.Writer }

func (f *frameWriter) write(kind byte, doc []byte) error {
	if err := f.w.WriteByte(kind); err != nil {
		return err
	}
	_, err := f.w.Write(doc)
	return err
}

func (f *frameWriter) writeDoc(kind byte, v any) error {
	raw, err := bson.Marshal(v)
	if err != nil {
		return err
	}
	return f.write(kind, raw)
}

type frameReader struct {
	r   *bufio.Reader
	art string
}

// next returns the next record; io.EOF only at a record boundary.
func (f *frameReader) next() (byte, bson.Raw, error) {
	kind, err := f.r.ReadByte()
	if err != nil {
		return 0, nil, err
	}
	var lenBuf [4]byte
	if _, err := io.ReadFull(f.r, lenBuf[:]); err != nil {
		return 0, nil, f.truncated(err)
	}
	n := int(int32(binary.LittleEndian.Uint32(lenBuf[:])))
	if n < 5 || n > maxRecord {
		return 0, nil, fmt.Errorf("%s: record of %d bytes", f.art, n)
	}
	doc := make([]byte, n)
	copy(doc, lenBuf[:])
	if _, err := io.ReadFull(f.r, doc[4:]); err != nil {
		return 0, nil, f.truncated(err)
	}
	if err := bson.Raw(doc).Validate(); err != nil {
		return 0, nil, fmt.Errorf("%s: record %q: %w", f.art, kind, err)
	}
	return kind, bson.Raw(doc), nil
}

func (f *frameReader) truncated(err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("%s: truncated record", f.art)
	}
	return err
}

// drain reads the rest of an artifact after err so that a corrupt
// artifact is reported as the *engines.ChecksumError it is, not as the
// parse or insert error its damage caused.
func drain(r io.Reader, err error) error {
	if _, derr := io.Copy(io.Discard, r); derr != nil {
		var ce *engines.ChecksumError
		if errors.As(derr, &ce) {
			return derr
		}
	}
	return err
}

type header struct {
	Format   string `bson:"format"`
	Database string `bson:"database"`
	Server   string `bson:"server"`
}

type collHeader struct {
	Name    string     `bson:"name"`
	Type    string     `bson:"type"`
	Options bson.Raw   `bson:"options,omitempty"`
	Indexes []bson.Raw `bson:"indexes"`
}

type collEnd struct {
	Count int64 `bson:"count"`
}

type dbEnd struct {
	Collections int64 `bson:"collections"`
	Documents   int64 `bson:"documents"`
}

var unsafeArtifactChars = regexp.MustCompile(`[^a-z0-9._-]+`)

// artifactNamer gives each database a unique artifact name that shows its
// name where it can.
type artifactNamer map[string]bool

func (a artifactNamer) name(db string) string {
	base := "db-" + unsafeArtifactChars.ReplaceAllString(strings.ToLower(db), "_")
	n := base + ".bson"
	for i := 2; a[n]; i++ {
		n = fmt.Sprintf("%s-%d.bson", base, i)
	}
	a[n] = true
	return n
}
