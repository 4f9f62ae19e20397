package audiences

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/patientmsg/gateway/internal/redistest"
)

// recipients makes n distinct valid recipients.
func recipients(n int) []Recipient {
	out := make([]Recipient, n)
	for i := range out {
		out[i] = Recipient{
			Phone:      fmt.Sprintf("+86138%08d", i),
			Email:      fmt.Sprintf("p%d@example.org", i),
			Locale:     "zh-CN",
			TimeZone:   "Asia/Shanghai",
			ExternalID: fmt.Sprintf("MRN-%d", i),
		}
	}
	return out
}

func TestStoreRoundTrip100k(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	rdb := redistest.Start(t).Client()
	s := NewStore(rdb, time.Hour)
	res := &ParseResult{
		Recipients:     recipients(100_000),
		Errors:         []RowError{{Line: 7, Reason: `phone "12ab" is not a valid number`}},
		Invalid:        1,
		Duplicates:     2,
		Rows:           100_003,
		IgnoredColumns: []string{"name"},
	}
	start := time.Now()
	a, err := s.Save(ctx, "clinic-a", res)
	took := time.Since(start)
	if err != nil {
		t.Fatalf("Save: %v", err)
	}
	// How fast is for the broadcast benchmark (it saves a 100,000-person
	// audience in every run); here only what was saved.
	t.Logf("Save of 100,000 recipients took %v", took)
	if !strings.HasPrefix(a.ID, "aud_") || a.Count != 100_000 || a.Chunks != 100 {
		t.Fatalf("audience %+v", a)
	}

	got, err := s.Get(ctx, "clinic-a", a.ID)
	if err != nil {
		t.Fatalf("Get: %v", err)
	}
	if !reflect.DeepEqual(got, a) {
		t.Fatalf("Get:\n got %+v\nwant %+v", got, a)
	}
	n, err := s.Chunks(ctx, "clinic-a", a.ID)
	if err != nil || n != 100 {
		t.Fatalf("Chunks = %d, %v; want 100", n, err)
	}
	start = time.Now()
	var back []Recipient
	for i := range n {
		c, err := s.Chunk(ctx, "clinic-a", a.ID, i)
		if err != nil {
			t.Fatalf("Chunk %d: %v", i, err)
		}
		if len(c) != ChunkSize {
			t.Fatalf("chunk %d has %d recipients", i, len(c))
		}
		back = append(back, c...)
	}
	t.Logf("reading 100 chunks took %v", time.Since(start))
	if !reflect.DeepEqual(back, res.Recipients) {
		t.Fatal("the recipients read back differ from those saved")
	}
	if _, err := s.Chunk(ctx, "clinic-a", a.ID, 100); !errors.Is(err, ErrChunkRange) {
		t.Fatalf("chunk 100: %v, want ErrChunkRange", err)
	}
	if _, err := s.Chunk(ctx, "clinic-a", a.ID, -1); !errors.Is(err, ErrChunkRange) {
		t.Fatalf("chunk -1: %v, want ErrChunkRange", err)
	}

	// Every key shares the audience's hash tag, expires, and names no recipient.
	keys, err := rdb.Keys(ctx, "*").Result()
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != 2 {
		t.Fatalf("keys %q, want a meta and a chunks key", keys)
	}
	for _, k := range keys {
		if !strings.Contains(k, "{"+a.ID+"}") || strings.Contains(k, "+86") || strings.Contains(k, "@") {
			t.Errorf("key %q", k)
		}
		if ttl := rdb.PTTL(ctx, k).Val(); ttl <= 0 || ttl > time.Hour {
			t.Errorf("key %q expires in %v, want within an hour", k, ttl)
		}
	}
}

func TestStoreLastChunkAndReport(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s := NewStore(redistest.Start(t).Client(), 0)
	res := parse(t, "phone,name,ward\n+8613800138000,Ann,3B\n+8613800138000,Ann,3B\nbad,,\n", ParseOptions{})
	res.Recipients = append(res.Recipients, recipients(ChunkSize + 1)[1:]...)
	a, err := s.Save(ctx, "t1", res)
	if err != nil {
		t.Fatal(err)
	}
	if a.Count != ChunkSize+1 || a.Chunks != 2 || a.Duplicates != 1 || a.Invalid != 1 || len(a.Errors) != 2 ||
		!reflect.DeepEqual(a.IgnoredColumns, []string{"name", "ward"}) {
		t.Fatalf("audience %+v", a)
	}
	if d := a.ExpiresAt.Sub(a.CreatedAt); d != DefaultTTL {
		t.Fatalf("expires after %v, want the default %v", d, DefaultTTL)
	}
	last, err := s.Chunk(ctx, "t1", a.ID, 1)
	if err != nil || len(last) != 1 || last[0].Phone != fmt.Sprintf("+86138%08d", ChunkSize) {
		t.Fatalf("last chunk %+v, %v", last, err)
	}
	first, err := s.Chunk(ctx, "t1", a.ID, 0)
	if err != nil || first[0].Phone != "+8613800138000" {
		t.Fatalf("first chunk starts with %+v, %v", first[0], err)
	}
}

func TestStoreTenantIsolationAndUnknownIDs(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s := NewStore(redistest.Start(t).Client(), time.Hour)
	a, err := s.Save(ctx, "clinic-a", &ParseResult{Recipients: recipients(3)})
	if err != nil {
		t.Fatal(err)
	}
	for name, id := range map[string]string{
		"other tenant's": a.ID,
		"unknown":        NewID(),
		"malformed":      "aud_}:meta",
		"empty":          "",
		"lower case":     strings.ToLower(a.ID),
	} {
		tenant := "clinic-a"
		if name == "other tenant's" {
			tenant = "clinic-b"
		}
		if _, err := s.Get(ctx, tenant, id); !errors.Is(err, ErrNotFound) {
			t.Errorf("Get %s: %v, want ErrNotFound", name, err)
		}
		if _, err := s.Chunks(ctx, tenant, id); !errors.Is(err, ErrNotFound) {
			t.Errorf("Chunks %s: %v, want ErrNotFound", name, err)
		}
		if c, err := s.Chunk(ctx, tenant, id, 0); !errors.Is(err, ErrNotFound) || c != nil {
			t.Errorf("Chunk %s: %d recipients, %v; want ErrNotFound", name, len(c), err)
		}
		if err := s.Delete(ctx, tenant, id); !errors.Is(err, ErrNotFound) {
			t.Errorf("Delete %s: %v, want ErrNotFound", name, err)
		}
	}
	if _, err := s.Get(ctx, "", a.ID); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get with no tenant: %v, want ErrNotFound", err)
	}
	// The owner still has it, and can delete it.
	if c, err := s.Chunk(ctx, "clinic-a", a.ID, 0); err != nil || len(c) != 3 {
		t.Fatalf("owner's Chunk: %d, %v", len(c), err)
	}
	if err := s.Delete(ctx, "clinic-a", a.ID); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	if _, err := s.Get(ctx, "clinic-a", a.ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get after Delete: %v", err)
	}
	if _, err := s.Chunk(ctx, "clinic-a", a.ID, 0); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Chunk after Delete: %v", err)
	}
}

func TestStoreRefusesEmpty(t *testing.T) {
	s := NewStore(redistest.Start(t).Client(), time.Hour)
	ctx := context.Background()
	if _, err := s.Save(ctx, "t1", &ParseResult{}); !errors.Is(err, ErrEmpty) {
		t.Fatalf("empty: %v", err)
	}
	if _, err := s.Save(ctx, "t1", nil); !errors.Is(err, ErrEmpty) {
		t.Fatalf("nil: %v", err)
	}
	if _, err := s.Save(ctx, "", &ParseResult{Recipients: recipients(1)}); err == nil {
		t.Fatal("saved without a tenant")
	}
}

func TestStoreExpires(t *testing.T) {
	srv := redistest.Start(t)
	s := NewStore(srv.Client(), 200*time.Millisecond)
	ctx := context.Background()
	a, err := s.Save(ctx, "t1", &ParseResult{Recipients: recipients(2)})
	if err != nil {
		t.Fatal(err)
	}
	srv.FastForward(time.Second)
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, err := s.Get(ctx, "t1", a.ID)
		if errors.Is(err, ErrNotFound) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the audience did not expire: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if _, err := s.Chunk(ctx, "t1", a.ID, 0); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Chunk after expiry: %v", err)
	}
}

// On a Redis Cluster, Save's MULTI/EXEC and Chunk's pipeline only work if
// every key of the audience hashes to one slot.
func TestStoreOnCluster(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	srv := redistest.StartCluster(t)
	rdb := redis.NewClusterClient(&redis.ClusterOptions{Addrs: []string{srv.Addr}})
	t.Cleanup(func() { _ = rdb.Close() })
	s := NewStore(rdb, time.Hour)
	a, err := s.Save(ctx, "t1", &ParseResult{Recipients: recipients(2500)})
	if err != nil {
		t.Fatalf("Save on a cluster: %v", err)
	}
	c, err := s.Chunk(ctx, "t1", a.ID, 2)
	if err != nil || len(c) != 500 {
		t.Fatalf("Chunk on a cluster: %d, %v", len(c), err)
	}
	if _, err := s.Get(ctx, "t1", a.ID); err != nil {
		t.Fatalf("Get on a cluster: %v", err)
	}
}

func TestNewID(t *testing.T) {
	seen := map[string]bool{}
	for range 1000 {
		id := NewID()
		if !validID(id) || seen[id] {
			t.Fatalf("id %q: valid %v, repeated %v", id, validID(id), seen[id])
		}
		seen[id] = true
	}
}
