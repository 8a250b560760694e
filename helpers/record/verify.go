package record

import (
	"bufio"
	"bytes"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"

	"lukechampine.com/blake3"

	"sluice/msg"
)

// MaxLine bounds one line of a recording when reading it back: a 32 KiB
// read escapes to at most 6 bytes a byte.
const MaxLine = 1 << 20

// Verify reads a recording and checks its seals with key. live says a
// recorder still holds it (a missing end seal is then expected).
func Verify(r io.Reader, key []byte, live bool) (msg.RecVerifyReply, error) {
	var v msg.RecVerifyReply
	chain := blake3.New(32, key)
	br := bufio.NewReaderSize(r, 64<<10)
	var off int64
	ended := false
	lineNo := 0
	for {
		line, err := readLine(br)
		if len(line) > 0 && line[len(line)-1] != '\n' {
			// A partial last line: bytes written after the last seal,
			// or a cut in the middle of a line.
			v.Size = off + int64(len(line))
			break
		}
		if len(line) > 0 {
			lineNo++
			if ended {
				v.State, v.Detail = msg.RecAltered, fmt.Sprintf("line %d (byte %d): data after the end seal", lineNo, off)
				return v, nil
			}
			if t, label, mac, ok := parseSeal(line); ok {
				want := sealMAC(key, label, chain.Sum(nil))
				if subtle.ConstantTimeCompare(want, mac) != 1 {
					v.State, v.Detail = msg.RecAltered, fmt.Sprintf("line %d (byte %d, %.3fs): seal does not hold: the recording was changed before it", lineNo, off, t)
					return v, nil
				}
				v.Seals++
				v.Sealed = off + int64(len(line))
				v.Duration = t
				ended = label == labelEnd
			} else if lineNo == 1 {
				var h Header
				if json.Unmarshal(line, &h) != nil || h.Version != 2 {
					v.State, v.Detail = msg.RecAltered, "line 1: not an asciicast v2 header"
					return v, nil
				}
			}
			chain.Write(line)
			off += int64(len(line))
		}
		if errors.Is(err, io.EOF) {
			v.Size = off
			break
		}
		if err != nil {
			return v, fmt.Errorf("record: verify: %w", err)
		}
	}
	switch {
	case v.Seals == 0:
		v.State, v.Detail = msg.RecCut, "no seal: the header itself is missing or cut"
	case ended && v.Size == v.Sealed:
		v.State, v.Detail = msg.RecIntact, fmt.Sprintf("%d seals, %d bytes, %.3fs, ended", v.Seals, v.Size, v.Duration)
	case live:
		v.State, v.Detail = msg.RecLive, fmt.Sprintf("%d seals hold so far (%d bytes, %.3fs)", v.Seals, v.Sealed, v.Duration)
	case v.Size > v.Sealed:
		v.State, v.Detail = msg.RecCut, fmt.Sprintf("cut at %.3fs (byte %d): %d bytes after the last seal, no end seal", v.Duration, v.Sealed, v.Size-v.Sealed)
	default:
		v.State, v.Detail = msg.RecCut, fmt.Sprintf("cut at %.3fs (byte %d): every seal holds but there is no end seal (the recorder was stopped, or the end was removed)", v.Duration, v.Sealed)
	}
	return v, nil
}

// readLine reads through '\n', at most MaxLine bytes.
func readLine(br *bufio.Reader) ([]byte, error) {
	var out []byte
	for {
		frag, err := br.ReadSlice('\n')
		out = append(out, frag...)
		if len(out) > MaxLine {
			return nil, fmt.Errorf("line longer than %d bytes", MaxLine)
		}
		if !errors.Is(err, bufio.ErrBufferFull) {
			return out, err
		}
	}
}

// parseSeal recognises [T, "s", "LABEL HEX"].
func parseSeal(line []byte) (t float64, label string, mac []byte, ok bool) {
	if !bytes.Contains(line, []byte(`, "s", "`)) {
		return 0, "", nil, false
	}
	var ev []any
	if json.Unmarshal(line, &ev) != nil || len(ev) != 3 {
		return 0, "", nil, false
	}
	kind, _ := ev[1].(string)
	data, _ := ev[2].(string)
	t, tok := ev[0].(float64)
	if kind != "s" || !tok {
		return 0, "", nil, false
	}
	label, h, found := strings.Cut(data, " ")
	if !found || (label != labelSeal && label != labelEnd) {
		return 0, "", nil, false
	}
	mac, err := hex.DecodeString(h)
	if err != nil || len(mac) != 32 {
		return 0, "", nil, false
	}
	return t, label, mac, true
}
