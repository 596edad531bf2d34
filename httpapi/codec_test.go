package httpapi

import (
	"bytes"
	"net/http/httptest"
	"reflect"
	"testing"
)

// The hand-written readers (records_codec.go, detokenize_codec.go) are
// held to the handlers' encoding/json path, decodeFrom, which reads what
// they decline.

// byDecodeFrom reads b as the handlers' encoding/json path does,
// reporting whether it took it.
func byDecodeFrom[T any](b []byte) (T, bool) {
	var v T
	ok := (&Server{}).decodeFrom(httptest.NewRecorder(), bytes.NewReader(b), &v)
	return v, ok
}

// sameAsDecodeFrom checks that whatever byHand takes, byJSON (the
// encoding/json path, its result in the same form) takes too, with the
// same result; it reports whether byHand took b.
func sameAsDecodeFrom[T any](t testing.TB, b []byte, byHand func([]byte) (T, bool), byJSON func([]byte) (T, bool)) bool {
	t.Helper()
	got, fast := byHand(b)
	if !fast {
		return false
	}
	want, ok := byJSON(b)
	if !ok {
		t.Fatalf("taken by hand, refused by encoding/json: %q", b)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("%q: by hand %+v\nencoding/json %+v", b, got, want)
	}
	return true
}
