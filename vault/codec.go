package vault

import (
	"encoding/binary"
	"errors"
	"time"
)

// storedRecord is a record as stored in Badger: non-sensitive values as
// JSON, sensitive ones as their token only. The ciphertext of a sensitive
// value lives in its token-index entry, so a reveal is one lookup.
type storedRecord struct {
	Created time.Time
	Fields  []storedField
}

type storedField struct {
	Name  string
	Value []byte // JSON, non-sensitive fields only
	Token string // sensitive fields only
}

// sensitive reports whether the field holds a token.
func (f *storedField) sensitive() bool { return f.Token != "" }

// recordFormatV1 is the first byte of every stored record. The encoding is
// a version byte, the creation time (unix nanoseconds, uvarint), the field
// count, and per field: name, a sensitive flag, then either the JSON value
// or the token, each length-prefixed (uvarint).
const recordFormatV1 = 1

var errCorruptRecord = errors.New("corrupt stored record")

func encodeRecord(r *storedRecord) []byte {
	n := 1 + 2*binary.MaxVarintLen64
	for _, f := range r.Fields {
		n += 3*binary.MaxVarintLen32 + 1 + len(f.Name) + len(f.Value) + len(f.Token)
	}
	return appendEncodedRecord(make([]byte, 0, n), r)
}

// appendEncodedRecord appends encodeRecord's bytes to b.
func appendEncodedRecord(b []byte, r *storedRecord) []byte {
	b = append(b, recordFormatV1)
	b = binary.AppendUvarint(b, uint64(r.Created.UnixNano()))
	b = binary.AppendUvarint(b, uint64(len(r.Fields)))
	for _, f := range r.Fields {
		b = appendString(b, f.Name)
		if f.sensitive() {
			b = append(b, 1)
			b = appendString(b, f.Token)
		} else {
			b = append(b, 0)
			b = appendBytes(b, f.Value)
		}
	}
	return b
}

func appendBytes(b, v []byte) []byte {
	b = binary.AppendUvarint(b, uint64(len(v)))
	return append(b, v...)
}

func appendString(b []byte, v string) []byte {
	b = binary.AppendUvarint(b, uint64(len(v)))
	return append(b, v...)
}

// decodeRecord parses an encoded record. It copies what it keeps, so b may
// be a Badger buffer that is reused after the call.
func decodeRecord(b []byte) (storedRecord, error) {
	var r storedRecord
	if len(b) == 0 || b[0] != recordFormatV1 {
		return r, errCorruptRecord
	}
	d := decoder{b: b[1:]}
	created := d.uvarint()
	nf := d.uvarint()
	if d.err != nil || nf > MaxFields {
		return r, errCorruptRecord
	}
	r.Created = time.Unix(0, int64(created)).UTC()
	r.Fields = make([]storedField, 0, nf)
	for range nf {
		var f storedField
		f.Name = string(d.bytes())
		switch d.byte() {
		case 0:
			f.Value = append([]byte(nil), d.bytes()...)
		case 1:
			f.Token = string(d.bytes())
			if f.Token == "" {
				return r, errCorruptRecord
			}
		default:
			return r, errCorruptRecord
		}
		r.Fields = append(r.Fields, f)
	}
	if d.err != nil || len(d.b) != 0 {
		return r, errCorruptRecord
	}
	return r, nil
}

type decoder struct {
	b   []byte
	err error
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.err = errCorruptRecord
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) byte() byte {
	if d.err != nil || len(d.b) == 0 {
		d.err = errCorruptRecord
		return 0xff
	}
	c := d.b[0]
	d.b = d.b[1:]
	return c
}

func (d *decoder) bytes() []byte {
	n := d.uvarint()
	if d.err != nil || n > uint64(len(d.b)) {
		d.err = errCorruptRecord
		return nil
	}
	v := d.b[:n]
	d.b = d.b[n:]
	return v
}
