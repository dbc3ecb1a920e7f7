package s3

import "testing"

// TestPartsGrow: the parts of an upload start small (little memory) and
// grow every 2,000 parts, so that 10,000 parts of the default size still
// hold a large object; no part exceeds S3's 5 GiB.
func TestPartsGrow(t *testing.T) {
	u := &upload{b: &Bucket{opts: Options{PartSize: DefaultPartSize}}}
	var total int64
	for n := int32(1); n <= maxParts; n++ {
		u.next = n
		size := u.partSize()
		switch n {
		case 1, 2000:
			if size != DefaultPartSize {
				t.Errorf("part %d: %d bytes, want %d", n, size, DefaultPartSize)
			}
		case 2001:
			if size != 2*DefaultPartSize {
				t.Errorf("part %d: %d bytes, want %d", n, size, 2*DefaultPartSize)
			}
		}
		total += size
	}
	if total < 490e9 {
		t.Errorf("10,000 parts hold %d bytes, want at least 490 GB", total)
	}
	u.b.opts.PartSize = 4 << 30
	u.next = 2001
	if size := u.partSize(); size != maxPartSize {
		t.Errorf("a grown 4 GiB part is %d bytes, want S3's largest, %d", size, int64(maxPartSize))
	}
}
