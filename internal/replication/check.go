package replication

import (
	"bufio"
	"context"
	"log/slog"
	"strconv"
	"strings"
	"sync"

	"github.com/redis/go-redis/v9"
)

// Topology is what a primary says of its replication (INFO replication,
// CONFIG GET min-replicas-to-write).
type Topology struct {
	// Replicas is how many replicas are connected (connected_slaves; on
	// Cluster, the fewest of any primary).
	Replicas int
	// MinReplicasToWrite is the primary's min-replicas-to-write, -1 when
	// CONFIG is not allowed (managed services rename or refuse it).
	MinReplicasToWrite int
}

// Inspect reads the primary's replication (every primary's on Cluster).
func Inspect(ctx context.Context, rdb redis.UniversalClient) (Topology, error) {
	if cc, ok := rdb.(*redis.ClusterClient); ok {
		var mu sync.Mutex
		var t Topology
		first := true
		err := cc.ForEachMaster(ctx, func(ctx context.Context, node *redis.Client) error {
			nt, err := inspect(ctx, node)
			if err != nil {
				return err
			}
			mu.Lock()
			defer mu.Unlock()
			if first || nt.Replicas < t.Replicas {
				t.Replicas = nt.Replicas
			}
			if first || nt.MinReplicasToWrite < t.MinReplicasToWrite {
				t.MinReplicasToWrite = nt.MinReplicasToWrite
			}
			first = false
			return nil
		})
		return t, err
	}
	return inspect(ctx, rdb)
}

func inspect(ctx context.Context, c redis.Cmdable) (Topology, error) {
	info, err := c.Info(ctx, "replication").Result()
	if err != nil {
		return Topology{}, err
	}
	t := Topology{Replicas: infoInt(info, "connected_slaves"), MinReplicasToWrite: -1}
	if v, err := c.ConfigGet(ctx, "min-replicas-to-write").Result(); err == nil {
		if n, err := strconv.Atoi(v["min-replicas-to-write"]); err == nil {
			t.MinReplicasToWrite = n
		}
	}
	return t, nil
}

// infoInt reads a whole-number field of an INFO answer (0 when absent).
func infoInt(info, field string) int {
	sc := bufio.NewScanner(strings.NewReader(info))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(strings.TrimSpace(sc.Text()), field+":"); ok {
			n, _ := strconv.Atoi(v)
			return n
		}
	}
	return 0
}

// Check reads the primary's replication at start-up and warns of settings
// that lose acknowledged messages in a failover or make every write wait
// in vain: replicas but no acknowledgement asked (REDIS_MIN_REPLICAS_ACK
// 0), more acknowledgements asked than there are replicas, a primary that
// keeps taking writes with no replica (min-replicas-to-write 0). It
// returns what it read; an unreachable Redis is the caller's to report.
func Check(ctx context.Context, rdb redis.UniversalClient, replicas int, log *slog.Logger) (Topology, error) {
	t, err := Inspect(ctx, rdb)
	if err != nil {
		return t, err
	}
	switch {
	case t.Replicas > 0 && replicas == 0:
		log.Warn("Redis has replicas but REDIS_MIN_REPLICAS_ACK is 0: a message acknowledged just before a failover can be lost, and sent twice when retried; set REDIS_MIN_REPLICAS_ACK (docs/failover.md)",
			"replicas", t.Replicas)
	case replicas > t.Replicas:
		log.Warn("REDIS_MIN_REPLICAS_ACK asks for more replicas than the primary has: every write is answered 503 until enough replicas are connected",
			"replicas", t.Replicas, "want", replicas)
	}
	if t.Replicas > 0 && t.MinReplicasToWrite == 0 {
		log.Warn("the Redis primary has min-replicas-to-write 0: cut off from its replicas, it keeps taking writes that a failover then discards; set min-replicas-to-write 1 (docs/failover.md)")
	}
	return t, nil
}
