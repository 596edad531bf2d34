package detect

import (
	"bufio"
	"encoding/json"
	"os"
	"strings"
	"testing"
)

// BenchmarkFind measures pattern detection over the corpus's texts, in
// MB/s of text on one core.
func BenchmarkFind(b *testing.B) {
	text := corpusText(b)
	b.SetBytes(int64(len(text)))
	b.ReportAllocs()
	for b.Loop() {
		Find(text, Options{})
	}
}

// BenchmarkFindProse is detection over prose with few sensitive values
// (testdata/prose.txt, a snapshot of this project's README: 38 KB of
// technical text with example tokens, addresses and keys), where the cost
// is the scan rather than the checks.
func BenchmarkFindProse(b *testing.B) {
	raw, err := os.ReadFile("testdata/prose.txt")
	if err != nil {
		b.Fatal(err)
	}
	text := string(raw)
	b.SetBytes(int64(len(text)))
	b.ReportAllocs()
	for b.Loop() {
		Find(text, Options{})
	}
}

// BenchmarkFindType is BenchmarkFind for one entity type at a time: where
// detection's time goes.
func BenchmarkFindType(b *testing.B) {
	text := corpusText(b)
	for _, typ := range Types {
		b.Run(typ, func(b *testing.B) {
			b.SetBytes(int64(len(text)))
			for b.Loop() {
				Find(text, Options{Types: []string{typ}})
			}
		})
	}
}

// corpusText is the corpus's texts, one per line.
func corpusText(b *testing.B) string {
	f, err := os.Open("testdata/corpus.jsonl")
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	var texts []string
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var s labelled
		if err := json.Unmarshal(sc.Bytes(), &s); err != nil {
			b.Fatal(err)
		}
		texts = append(texts, s.Text)
	}
	return strings.Join(texts, "\n")
}
