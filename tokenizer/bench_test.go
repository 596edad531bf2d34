package tokenizer

import "testing"

func BenchmarkRandom(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		_ = Random()
	}
}

func BenchmarkDeterministic(b *testing.B) {
	k := hmacPRF("bench key")
	v := []byte(`120000`)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Deterministic(k, "salary", v); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkFormatPreserving(b *testing.B) {
	for _, tc := range []struct {
		f Format
		v string
	}{{FormatCard, "4111 1111 1111 1234"}, {FormatSSN, "123-45-6789"}, {FormatEmail, "jane.doe@example.com"}, {FormatDigits, "0012345678"}} {
		b.Run(string(tc.f), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := FormatPreserving(tc.f, tc.v); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkMask(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		_ = MaskLast4.Apply("4111 1111 1111 1234")
	}
}
