package service_test

import (
	"bytes"
	"compress/gzip"
	"compress/zlib"
	"io"
	"net/http"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/andybalholm/brotli"

	"github.com/patientmsg/gateway/internal/config"
)

// zeros reads as an endless run of zero bytes.
type zeros struct{}

func (zeros) Read(p []byte) (int, error) { clear(p); return len(p), nil }

func gzipOf(t *testing.T, b []byte) []byte {
	var out bytes.Buffer
	w, _ := gzip.NewWriterLevel(&out, gzip.BestCompression)
	if _, err := w.Write(b); err != nil {
		t.Fatal(err)
	}
	_ = w.Close()
	return out.Bytes()
}

func zlibOf(t *testing.T, r io.Reader) []byte {
	var out bytes.Buffer
	w, _ := zlib.NewWriterLevel(&out, zlib.BestCompression)
	if _, err := io.Copy(w, r); err != nil {
		t.Fatal(err)
	}
	_ = w.Close()
	return out.Bytes()
}

func brotliOf(t *testing.T, r io.Reader, lgwin int) []byte {
	var out bytes.Buffer
	w := brotli.NewWriterOptions(&out, brotli.WriterOptions{Quality: 5, LGWin: lgwin})
	if _, err := io.Copy(w, r); err != nil {
		t.Fatal(err)
	}
	_ = w.Close()
	return out.Bytes()
}

// gzipZeros is a gzip stream of mib MiB of zeros: one member per MiB
// (concatenated gzip members are one valid gzip stream), so a gigabyte
// costs a millisecond to make.
func gzipZeros(t *testing.T, mib int) []byte {
	one := gzipOf(t, make([]byte, 1<<20))
	return bytes.Repeat(one, mib)
}

// bomb is a request body that inflates far past any limit.
type bomb struct {
	name, encoding string
	body           []byte
}

func bombs(t *testing.T) []bomb {
	const mib = 1 << 20
	gig := gzipZeros(t, 1024)
	zlib32 := zlibOf(t, io.LimitReader(zeros{}, 32*mib))
	br32 := brotliOf(t, io.LimitReader(zeros{}, 32*mib), 22)
	br16M := brotliOf(t, io.LimitReader(zeros{}, 32*mib), 24)
	return []bomb{
		{"gzip, gzip: 1 GiB of zeros", "gzip, gzip", gzipOf(t, gig)},
		{"deflate, deflate: zeros", "deflate, deflate", zlibOf(t, bytes.NewReader(zlib32))},
		{"br, br: zeros", "br, br", brotliOf(t, bytes.NewReader(br32), 22)},
		{"gzip, br: zeros", "gzip, br", brotliOf(t, bytes.NewReader(gzipZeros(t, 32)), 22)},
		{"gzip: 32 MiB of zeros", "gzip", gzipZeros(t, 32)},
		{"deflate: 32 MiB of zeros", "deflate", zlib32},
		{"br: 32 MiB of zeros", "br", br32},
		{"br with a 16 MiB window", "br", br16M},
		{"an unknown coding", "compress", []byte("\x1f\x9d\x90")},
	}
}

// TestCompressedBodyBombsCostNoMoreThanTheirSize sends every bomb to every
// route that reads a body, as anyone on the internet could (the API's with a
// valid key), and checks that each is refused at once, without inflating
// past the route's limit.
func TestCompressedBodyBombsCostNoMoreThanTheirSize(t *testing.T) {
	// The upload limit is lowered so that inflating a bomb up to it stays
	// within the heap budget below; the default is 20 MiB.
	const uploadLimit = 8 << 20
	e := start(t, config.RoleAPI, func(c *config.Config) { c.MaxUploadBytes = uploadLimit })
	bs := bombs(t)
	for _, b := range bs {
		if len(b.body) > e.cfg.MaxRequestBytes {
			t.Fatalf("bomb %q is %d bytes on the wire: too big to reach the inflater", b.name, len(b.body))
		}
	}
	var routes []string
	for _, r := range e.svc.API.App().GetRoutes(true) {
		if r.Method == http.MethodPost || r.Method == http.MethodPut {
			routes = append(routes, r.Method+" "+r.Path)
		}
	}
	if len(routes) < 20 {
		t.Fatalf("only %d routes read a body: %v", len(routes), routes)
	}
	var slowest time.Duration // the longest refusal, and the most allocated by one
	var most uint64
	for _, route := range routes {
		method, path, _ := strings.Cut(route, " ")
		path = strings.NewReplacer(":id", "x", ":name", "x").Replace(path)
		api := strings.HasPrefix(path, "/v1/")
		for _, b := range bs {
			t.Run(route+"/"+b.name, func(t *testing.T) {
				want := 415
				if api && !strings.Contains(b.encoding, ",") && b.encoding != "compress" && !strings.Contains(b.name, "window") {
					want = 413
				}
				ct := "application/json"
				switch {
				case !api:
					ct = "application/x-www-form-urlencoded"
				case path == "/v1/audiences":
					ct = "text/csv"
				}
				runtime.GC()
				var before, after runtime.MemStats
				runtime.ReadMemStats(&before)
				start := time.Now()
				key := ""
				if api {
					key = keyA
				}
				a := e.do(method, path, key, string(b.body), "Content-Type", ct, "Content-Encoding", b.encoding)
				took := time.Since(start)
				runtime.ReadMemStats(&after)
				if a.Status != want {
					t.Fatalf("status %d, want %d: %s", a.Status, want, a.Raw)
				}
				// The console's pages answer an HTML error page; every
				// other route a problem.
				wantType := "application/problem+json"
				if strings.HasPrefix(path, "/console/") {
					wantType = "text/html; charset=utf-8"
				}
				if a.Header.Get("Content-Type") != wantType {
					t.Fatalf("answered %q, want %q: %s", a.Header.Get("Content-Type"), wantType, a.Raw)
				}
				// A refusal reads a bounded prefix: it is quick on any
				// machine. The bound is loose so that a loaded machine does
				// not fail it; a gateway that inflated the whole bomb before
				// refusing would still allocate past the bound below.
				slowest, most = max(slowest, took), max(most, after.TotalAlloc-before.TotalAlloc)
				if took > slowdown*time.Second {
					t.Errorf("refused after %s, want < %d s", took, slowdown)
				}
				if grew := after.TotalAlloc - before.TotalAlloc; grew > 16<<20 {
					t.Errorf("the gateway allocated %d MiB for a %d-byte body, want < 16 MiB", grew>>20, len(b.body))
				}
			})
		}
	}
	t.Logf("%d bombs on %d routes: the slowest refused in %s, the most allocated by one %.1f MiB (client and gateway in one process)",
		len(bs), len(routes), slowest.Round(time.Millisecond), float64(most)/(1<<20))
}

// TestCompressedRequestsAreAcceptedOnce checks that a client that
// compresses its request once, with any common coding, is served as if it
// had not.
func TestCompressedRequestsAreAcceptedOnce(t *testing.T) {
	e := start(t, config.RoleAPI)
	msg := smsBody("+14155550100", "Your appointment is tomorrow at 9:30.")
	for _, c := range []struct {
		encoding string
		body     []byte
	}{
		{"gzip", gzipOf(t, []byte(msg))},
		{"deflate", zlibOf(t, strings.NewReader(msg))},
		{"br", brotliOf(t, strings.NewReader(msg), 22)},
		{"identity", []byte(msg)},
		{"GZIP", gzipOf(t, []byte(msg))},
	} {
		t.Run(c.encoding, func(t *testing.T) {
			a := e.do("POST", "/v1/messages", keyA, string(c.body), "Content-Encoding", c.encoding)
			if a.Status != http.StatusAccepted {
				t.Fatalf("status %d: %s", a.Status, a.Raw)
			}
		})
	}
	csv := "phone,locale\n+14155550100,en\n+14155550101,en\n"
	a := e.do("POST", "/v1/audiences", keyA, string(gzipOf(t, []byte(csv))), "Content-Type", "text/csv", "Content-Encoding", "gzip")
	if a.Status != http.StatusCreated {
		t.Fatalf("gzip CSV upload: %d %s", a.Status, a.Raw)
	}
	if a.Body["count"] != float64(2) {
		t.Fatalf("gzip CSV upload: %s", a.Raw)
	}
	corrupt := e.do("POST", "/v1/messages", keyA, "\x1f\x8b not gzip", "Content-Encoding", "gzip")
	if corrupt.Status != http.StatusBadRequest || !strings.Contains(corrupt.Raw, "gzip") {
		t.Fatalf("corrupt gzip: %d %s", corrupt.Status, corrupt.Raw)
	}
}
