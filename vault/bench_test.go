package vault

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"

	"github.com/agentvault/agentvault/tokenizer"
)

var benchSchema = Collection{Name: "bench", Fields: []Field{
	{Name: "ref", Type: TypeString},
	{Name: "secret", Type: TypeString, Sensitive: true},
}}

func benchEnv(b *testing.B, c Collection) *env {
	e := &env{t: &testing.T{}, dir: b.TempDir()}
	e.open()
	b.Cleanup(e.close)
	if _, err := e.svc.CreateCollection(context.Background(), RequestMeta{}, c); err != nil {
		b.Fatal(err)
	}
	return e
}

func batch(n int, f func(i int) map[string]json.RawMessage) []map[string]json.RawMessage {
	out := make([]map[string]json.RawMessage, n)
	for i := range out {
		out[i] = f(i)
	}
	return out
}

// BenchmarkCreateRecordSingle is one durable single-record create per
// operation, from parallel goroutines (group commit shares fsyncs).
func BenchmarkCreateRecordSingle(b *testing.B) {
	e := benchEnv(b, benchSchema)
	in := batch(1, func(i int) map[string]json.RawMessage { return fields("ref", "r", "secret", "value-00000001") })
	b.ReportAllocs()
	b.SetParallelism(32)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := e.svc.CreateRecords(context.Background(), RequestMeta{}, "bench", in); err != nil {
				b.Error(err)
			}
		}
	})
}

// BenchmarkCreateRecordsBatch stores 1,000 records with one sensitive field
// each per operation; values/s is reported.
func BenchmarkCreateRecordsBatch(b *testing.B) {
	for _, kind := range []tokenizer.Kind{tokenizer.KindRandom, tokenizer.KindDeterministic} {
		b.Run(string(kind), func(b *testing.B) {
			c := benchSchema
			c.Fields = []Field{benchSchema.Fields[0], {Name: "secret", Type: TypeString, Sensitive: true, Token: kind}}
			e := benchEnv(b, c)
			in := batch(1000, func(i int) map[string]json.RawMessage {
				return fields("ref", fmt.Sprint("r", i), "secret", fmt.Sprintf("value-%08d", i))
			})
			b.ReportAllocs()
			for b.Loop() {
				if _, err := e.svc.CreateRecords(context.Background(), RequestMeta{}, "bench", in); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N*1000)/b.Elapsed().Seconds(), "values/s")
		})
	}
}

// BenchmarkLookupValue resolves a token and decrypts its value (the core of
// detokenization, without grants or audit).
func BenchmarkLookupValue(b *testing.B) {
	e := benchEnv(b, benchSchema)
	recs, err := e.svc.CreateRecords(context.Background(), RequestMeta{}, "bench", batch(1000, func(i int) map[string]json.RawMessage {
		return fields("secret", fmt.Sprintf("value-%08d", i))
	}))
	if err != nil {
		b.Fatal(err)
	}
	toks := make([]string, len(recs))
	for i, r := range recs {
		json.Unmarshal(r.Fields["secret"], &toks[i])
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if _, _, err := e.svc.lookupValue(toks[i%len(toks)]); err != nil {
			b.Fatal(err)
		}
		i++
	}
}
