package buildid

import (
	"bytes"
	"strconv"
	"unicode/utf8"
)

// decodeManifest reads a manifest in the shape Write produces, several
// times faster than encoding/json: every Accept=yes helper instance loads
// the manifest for its handshake, and json.Unmarshal of a suite's
// manifest was 0.2-0.5 ms of each start (bench/NOTES.md). It takes only
// the plain subset of JSON that shape needs: the known keys once each,
// strings without escapes, integers. Anything else (an escape, a null, an
// unknown or repeated key, a float, bad syntax) makes it give up with
// ok false, and Load asks encoding/json, whose answer stands; so the fast
// path never decides what the file means, and FuzzDecodeManifest checks
// that whatever it accepts, encoding/json reads the same.
func decodeManifest(b []byte) (m Manifest, ok bool) {
	d := &decoder{b: b}
	ok = d.object(func(key string) bool {
		switch key {
		case "version":
			v, ok := d.int()
			m.Version = int(v)
			return ok && int64(m.Version) == v
		case "binaries":
			m.Binaries = []Binary{}
			return d.array(func() bool {
				m.Binaries = append(m.Binaries, Binary{})
				return d.binary(&m.Binaries[len(m.Binaries)-1])
			})
		case "entries":
			m.Entries = []Entry{}
			return d.array(func() bool {
				m.Entries = append(m.Entries, Entry{})
				return d.entry(&m.Entries[len(m.Entries)-1])
			})
		}
		return false
	})
	d.space()
	return m, ok && d.i == len(d.b)
}

type decoder struct {
	b []byte
	i int
}

func (d *decoder) binary(b *Binary) bool {
	return d.object(func(key string) bool {
		var ok bool
		switch key {
		case "component":
			b.Component, ok = d.str()
		case "file":
			b.File, ok = d.str()
		case "identity":
			ok = d.identity(&b.Identity)
		}
		return ok
	})
}

func (d *decoder) identity(id *Identity) bool {
	return d.object(func(key string) bool {
		var ok bool
		switch key {
		case "dev":
			id.Dev, ok = d.uint()
		case "ino":
			id.Ino, ok = d.uint()
		case "size":
			id.Size, ok = d.int()
		case "mtime_ns":
			id.MtimeNs, ok = d.int()
		case "ctime_ns":
			id.CtimeNs, ok = d.int()
		}
		return ok
	})
}

func (d *decoder) entry(e *Entry) bool {
	return d.object(func(key string) bool {
		var ok bool
		switch key {
		case "component":
			e.Component, ok = d.str()
		case "protocol":
			e.Protocol, ok = d.str()
		case "role":
			e.Role, ok = d.str()
		case "intent":
			e.Intent, ok = d.str()
		case "build_id":
			e.BuildID, ok = d.str()
		}
		return ok
	})
}

func (d *decoder) space() {
	for d.i < len(d.b) {
		switch d.b[d.i] {
		case ' ', '\t', '\n', '\r':
			d.i++
		default:
			return
		}
	}
}

// next skips space and takes c if it comes next.
func (d *decoder) next(c byte) bool {
	d.space()
	if d.i < len(d.b) && d.b[d.i] == c {
		d.i++
		return true
	}
	return false
}

// object reads {"key": value, ...}, handing each key to field, which
// reads the value; a key seen twice gives up (encoding/json would merge).
func (d *decoder) object(field func(key string) bool) bool {
	if !d.next('{') {
		return false
	}
	if d.next('}') {
		return true
	}
	var seen []string
	for {
		key, ok := d.str()
		if !ok || !d.next(':') {
			return false
		}
		for _, k := range seen {
			if k == key {
				return false
			}
		}
		seen = append(seen, key)
		if !field(key) {
			return false
		}
		if d.next('}') {
			return true
		}
		if !d.next(',') {
			return false
		}
	}
}

func (d *decoder) array(elem func() bool) bool {
	if !d.next('[') {
		return false
	}
	if d.next(']') {
		return true
	}
	for {
		if !elem() {
			return false
		}
		if d.next(']') {
			return true
		}
		if !d.next(',') {
			return false
		}
	}
}

// str reads a string with no escapes or control characters, in valid
// UTF-8 (encoding/json would replace what is not).
func (d *decoder) str() (string, bool) {
	if !d.next('"') {
		return "", false
	}
	end := bytes.IndexByte(d.b[d.i:], '"')
	if end < 0 {
		return "", false
	}
	s := d.b[d.i : d.i+end]
	for _, c := range s {
		if c < 0x20 || c == '\\' {
			return "", false
		}
	}
	if !utf8.Valid(s) {
		return "", false
	}
	d.i += end + 1
	return string(s), true
}

// digits reads an integer's digits as JSON writes them: no leading zero,
// no fraction or exponent after.
func (d *decoder) digits() ([]byte, bool) {
	d.space()
	start := d.i
	for d.i < len(d.b) && d.b[d.i] >= '0' && d.b[d.i] <= '9' {
		d.i++
	}
	n := d.b[start:d.i]
	if len(n) == 0 || (len(n) > 1 && n[0] == '0') {
		return nil, false
	}
	if d.i < len(d.b) {
		switch d.b[d.i] {
		case '.', 'e', 'E':
			return nil, false
		}
	}
	return n, true
}

func (d *decoder) uint() (uint64, bool) {
	n, ok := d.digits()
	if !ok {
		return 0, false
	}
	v, err := strconv.ParseUint(string(n), 10, 64)
	return v, err == nil
}

func (d *decoder) int() (int64, bool) {
	d.space()
	neg := d.i < len(d.b) && d.b[d.i] == '-'
	if neg {
		d.i++
		// JSON has no space between the sign and the digits.
		if d.i < len(d.b) && (d.b[d.i] < '0' || d.b[d.i] > '9') {
			return 0, false
		}
	}
	n, ok := d.digits()
	if !ok {
		return 0, false
	}
	s := string(n)
	if neg {
		s = "-" + s
	}
	v, err := strconv.ParseInt(s, 10, 64)
	return v, err == nil
}
