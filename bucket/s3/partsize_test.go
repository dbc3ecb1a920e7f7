package s3

import "testing"

// TestPartsGrow: the parts of an upload start small (little memory) and
// grow every 1,500 parts, so that 10,000 parts of the default size still
// hold a large object; no part exceeds S3's 5 GiB.
func TestPartsGrow(t *testing.T) {
	u := &upload{b: &Bucket{opts: Options{PartSize: DefaultPartSize}}}
	var total int64
	for n := int32(1); n <= maxParts; n++ {
		u.next = n
		size := u.partSize()
		switch n {
		case 1, partsPerSize:
			if size != DefaultPartSize {
				t.Errorf("part %d: %d bytes, want %d", n, size, DefaultPartSize)
			}
		case partsPerSize + 1:
			if size != 2*DefaultPartSize {
				t.Errorf("part %d: %d bytes, want %d", n, size, 2*DefaultPartSize)
			}
		}
		total += size
	}
	// Hundreds of GB in 10,000 parts, with room to spare.
	if total < 800e9 {
		t.Errorf("10,000 parts hold %d bytes, want at least 800 GB", total)
	}
	u.b.opts.PartSize = 4 << 30
	u.next = partsPerSize + 1
	if size := u.partSize(); size != maxPartSize {
		t.Errorf("a grown 4 GiB part is %d bytes, want S3's largest, %d", size, int64(maxPartSize))
	}
}

// TestUploadMemory: with the defaults an upload holds at most
// (Concurrency+1) parts of 5 MiB, 10 MiB, until the object passes 7.5 GB:
// the worker's peak RSS budget (issue 20) has room for no more.
func TestUploadMemory(t *testing.T) {
	if DefaultPartSize != MinPartSize {
		t.Errorf("DefaultPartSize %d, want S3's smallest, %d", DefaultPartSize, MinPartSize)
	}
	if held := int64(DefaultConcurrency+1) * DefaultPartSize; held > 10<<20 {
		t.Errorf("an upload holds up to %d MiB, want at most 10", held>>20)
	}
	if first := int64(partsPerSize) * DefaultPartSize; first < 7.5e9 {
		t.Errorf("parts first grow after %d bytes, want at least 7.5 GB", first)
	}
}

// TestFirstPartBuffer: the first part's buffer starts small (a small
// object takes little memory) and, once that is full, becomes one of
// exactly the part's size: growing it by append overshot the part by an
// eighth and left about twice the part in garbage behind.
func TestFirstPartBuffer(t *testing.T) {
	u := &upload{b: &Bucket{opts: Options{PartSize: DefaultPartSize, Concurrency: DefaultConcurrency}}, next: 1}
	chunk := make([]byte, 32<<10)
	if _, err := u.Write(chunk); err != nil {
		t.Fatal(err)
	}
	if c := cap(u.buf); c > 64<<10 {
		t.Errorf("after 32 KiB the buffer holds %d bytes, want at most 64 KiB", c)
	}
	for int64(len(u.buf))+int64(len(chunk)) <= DefaultPartSize {
		if _, err := u.Write(chunk); err != nil {
			t.Fatal(err)
		}
	}
	if c := int64(cap(u.buf)); c != DefaultPartSize {
		t.Errorf("a nearly full first part's buffer holds %d bytes, want the part size, %d", c, int64(DefaultPartSize))
	}
}
