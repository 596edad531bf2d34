package httpapi_test

import (
	"bytes"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/agentvault/agentvault/internal/apitest"
)

// discard is a ResponseWriter that keeps the status and drops the body.
type discard struct {
	h    http.Header
	code int
}

func (d *discard) Header() http.Header         { return d.h }
func (d *discard) Write(b []byte) (int, error) { return len(b), nil }
func (d *discard) WriteHeader(code int)        { d.code = code }

// BenchmarkCreateBatchHandler posts 1,000-record batches to the real
// handler, without a network between, from four goroutines on two cores
// (as vault's BenchmarkStoreFloorBatch writes, to a collection of the
// same name); cpu-µs/value is the process's CPU per record. Beside the
// floor over the same values it is the vault's own cost per value with
// no load generator sharing the cores.
func BenchmarkCreateBatchHandler(b *testing.B) {
	h := apitest.Handler(b, apitest.Options{})
	call := func(method, path, body string) int {
		r := httptest.NewRequest(method, path, strings.NewReader(body))
		r.Header.Set("Authorization", "Bearer "+apitest.AdminToken)
		r.Header.Set("Content-Type", "application/json")
		w := &discard{h: http.Header{}}
		h.ServeHTTP(w, r)
		return w.code
	}
	if code := call("POST", "/v1/collections", `{"name":"load_1795565358222682303","fields":[{"name":"ref","type":"string"},{"name":"secret","type":"string","sensitive":true}]}`); code != http.StatusCreated {
		b.Fatalf("create collection: %d", code)
	}
	var body bytes.Buffer
	body.WriteString(`{"records":[`)
	for i := range 1000 {
		if i > 0 {
			body.WriteByte(',')
		}
		fmt.Fprintf(&body, `{"fields":{"ref":"r%d","secret":"value-%08d"}}`, i, i)
	}
	body.WriteString(`]}`)
	// As vault's floor benchmarks: AGENTVAULT_FLOOR_PREFILL values first,
	// outside the measurement (not in the one-op probe run).
	if n, _ := strconv.Atoi(os.Getenv("AGENTVAULT_FLOOR_PREFILL")); b.N > 1 && n >= 1000 {
		var next atomic.Int64
		var wg sync.WaitGroup
		for range 4 {
			wg.Go(func() {
				for next.Add(1) <= int64(n/1000) {
					if code := call("POST", "/v1/collections/load_1795565358222682303/records", body.String()); code != http.StatusCreated {
						b.Errorf("prefill: %d", code)
						return
					}
				}
			})
		}
		wg.Wait()
	}
	b.ReportAllocs()
	b.ResetTimer()
	cpu0 := cpuTime()
	b.SetParallelism(2)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if code := call("POST", "/v1/collections/load_1795565358222682303/records", body.String()); code != http.StatusCreated {
				b.Errorf("create: %d", code)
				return
			}
		}
	})
	values := float64(b.N * 1000)
	b.ReportMetric(values/b.Elapsed().Seconds(), "values/s")
	b.ReportMetric(float64((cpuTime()-cpu0).Microseconds())/values, "cpu-µs/value")
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
