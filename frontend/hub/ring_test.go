package hub

import (
	"bytes"
	"testing"
)

func TestRing(t *testing.T) {
	cases := []struct {
		name   string
		max    int
		writes []int // sizes; bytes are a running counter so order shows
	}{
		{"empty", 1024, nil},
		{"small", 1024, []int{10, 20}},
		{"exactly full", 1024, []int{1000, 24}},
		{"wraps", 1024, []int{700, 700, 700}},
		{"one huge write", 1024, []int{5000}},
		{"many tiny", 1024, repeat(7, 400)},
		{"grow then wrap", 4096, []int{100, 600, 2000, 3000, 1}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := ring{max: c.max}
			var all []byte
			var k byte
			for _, n := range c.writes {
				p := make([]byte, n)
				for i := range p {
					p[i] = k
					k++
				}
				all = append(all, p...)
				r.write(p)
				if r.size() > c.max {
					t.Fatalf("ring allocated %d > max %d", r.size(), c.max)
				}
			}
			if r.head != int64(len(all)) {
				t.Fatalf("head %d, want %d", r.head, len(all))
			}
			want := all[max(0, len(all)-c.max):]
			got := make([]byte, r.head-r.start())
			r.read(r.start(), got)
			if !bytes.Equal(got, want) {
				t.Fatalf("ring holds %d bytes %x..., want %d bytes %x...", len(got), head(got), len(want), head(want))
			}
			// Any sub-range reads back too.
			if len(got) > 3 {
				sub := make([]byte, len(got)/3)
				r.read(r.start()+int64(len(got)/3), sub)
				if !bytes.Equal(sub, want[len(got)/3:len(got)/3+len(sub)]) {
					t.Fatalf("sub-range read differs")
				}
			}
		})
	}
}

func TestRingGrowsOnlyAsNeeded(t *testing.T) {
	r := ring{max: 256 << 10}
	r.write([]byte("user@host:~$ "))
	if r.size() > 1024 {
		t.Fatalf("a prompt made the ring allocate %d bytes", r.size())
	}
	r.write(make([]byte, 300<<10))
	if r.size() != 256<<10 {
		t.Fatalf("after a flood the ring has %d bytes, want its max", r.size())
	}
}

func repeat(n, times int) []int {
	out := make([]int, times)
	for i := range out {
		out[i] = n
	}
	return out
}

func head(b []byte) []byte { return b[:min(len(b), 8)] }
