package engines

import (
	"strings"
	"time"
)

// crockford is the ULID alphabet (Crockford's base32).
const crockford = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"

// IDTime reads the time from the first ten characters of a request id
// made by requests.NewID (a lower-case ULID, whose first ten characters
// are its milliseconds since 1970), so that a shortened id still tells
// it. ok is false for any other id (a scheduled request's <plan>-<slot>).
func IDTime(id string) (t time.Time, ok bool) {
	if len(id) < 10 {
		return time.Time{}, false
	}
	var ms uint64
	for _, c := range strings.ToUpper(id[:10]) {
		i := strings.IndexRune(crockford, c)
		if i < 0 {
			return time.Time{}, false
		}
		ms = ms<<5 | uint64(i)
	}
	t = time.UnixMilli(int64(ms)).UTC()
	// A ULID of capsule's is from this century; anything else is a
	// name that happens to use the alphabet.
	if t.Year() < 2020 || t.Year() > 2200 {
		return time.Time{}, false
	}
	return t, true
}
