package audiences

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"

	"github.com/redis/go-redis/v9"

	"github.com/patientmsg/gateway/internal/autopipe"
	"github.com/patientmsg/gateway/internal/consent"
)

// Erase blanks, in every audience of the tenant, the recipients with any
// of the identities: the row keeps its place (a broadcast's people are
// numbered by it) but loses its addresses, language, zone and external
// id, so a broadcast fanned out from it later finds nobody to reach
// there. It returns how many rows it blanked. Audiences have no index
// by tenant, so their keys are scanned; erasing again blanks nothing more.
func (s *Store) Erase(ctx context.Context, tenant string, ids []consent.Identity) (int, error) {
	want := map[consent.Identity]bool{}
	for _, id := range ids {
		want[consent.Normalise(id)] = true
	}
	n := 0
	err := scanKeys(ctx, s.rdb, "gw:audience:*:meta", func(c redis.UniversalClient, key string) error {
		t, err := c.HGet(ctx, key, "tenant").Result()
		if err != nil || t != tenant {
			return nil // expired, or another tenant's
		}
		id := key[len("gw:audience:{") : len(key)-len("}:meta")]
		m, err := s.eraseIn(ctx, id, want)
		n += m
		return err
	})
	return n, err
}

func (s *Store) eraseIn(ctx context.Context, id string, want map[consent.Identity]bool) (int, error) {
	chunks, err := s.rdb.LRange(ctx, chunksKey(id), 0, -1).Result()
	if err != nil {
		return 0, err
	}
	n := 0
	for i, raw := range chunks {
		var rs []Recipient
		if err := json.Unmarshal([]byte(raw), &rs); err != nil {
			return n, fmt.Errorf("audiences: chunk %d of %s is corrupt", i, id)
		}
		changed := false
		for j, r := range rs {
			if slices.ContainsFunc(r.Identities(), func(i consent.Identity) bool { return want[i] }) {
				rs[j] = Recipient{}
				changed = true
				n++
			}
		}
		if changed {
			if err := s.rdb.LSet(ctx, chunksKey(id), int64(i), encodeChunk(rs)).Err(); err != nil {
				return n, err
			}
		}
	}
	return n, nil
}

// scanKeys calls f for each key matching pattern, on every primary of a
// Redis Cluster.
func scanKeys(ctx context.Context, rdb redis.UniversalClient, pattern string, f func(c redis.UniversalClient, key string) error) error {
	scan := func(c redis.UniversalClient) error {
		it := c.Scan(ctx, 0, pattern, 500).Iterator()
		for it.Next(ctx) {
			if err := f(c, it.Val()); err != nil {
				return err
			}
		}
		return it.Err()
	}
	if cc, ok := autopipe.Underlying(rdb).(*redis.ClusterClient); ok {
		return cc.ForEachMaster(ctx, func(ctx context.Context, c *redis.Client) error { return scan(c) })
	}
	return scan(rdb)
}
