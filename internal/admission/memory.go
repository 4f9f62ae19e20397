package admission

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/patientmsg/gateway/internal/autopipe"
)

// Memory is a reading of Redis memory.
type Memory struct {
	// Used is used_memory; Max is maxmemory, 0 when Redis has none (then
	// the guard refuses nothing).
	Used, Max int64
	// At is when it was read.
	At time.Time
}

// Ratio is Used / Max; 0 without a maxmemory.
func (m Memory) Ratio() float64 {
	if m.Max <= 0 {
		return 0
	}
	return float64(m.Used) / float64(m.Max)
}

// Refusing lists the classes of request a reading refuses, first refused
// first.
func (c *Controller) Refusing(m Memory) []Class {
	out := []Class{}
	if c.cfg.Memory.Off() || m.Max <= 0 {
		return out
	}
	for _, cl := range []Class{Bulk, Routine, Urgent} {
		if m.Ratio() >= c.cfg.Memory.Of(cl) {
			out = append(out, cl)
		}
	}
	return out
}

// CheckMemory refuses a write of the class with a *StoreFullError when
// Redis memory is at or above the class's threshold. Without a reading
// (the guard is off, or Redis does not answer INFO) nothing is refused.
func (c *Controller) CheckMemory(ctx context.Context, class Class) error {
	if c.cfg.Memory.Off() {
		return nil
	}
	m, ok := c.Memory(ctx)
	if !ok || m.Max <= 0 {
		return nil
	}
	if th := c.cfg.Memory.Of(class); m.Ratio() >= th {
		return &StoreFullError{Class: class, Memory: m, Threshold: th}
	}
	return nil
}

// Memory is this process' reading of Redis memory, taken again when it is
// older than Config.MemoryTTL (by one request while the others use the
// last one), so the guard costs no round trip per request. ok is false
// when Redis has never answered.
func (c *Controller) Memory(ctx context.Context) (m Memory, ok bool) {
	now := c.cfg.Now()
	c.mu.Lock()
	fresh := c.tried && !now.Before(c.triedAt) && now.Sub(c.triedAt) < c.cfg.MemoryTTL
	if fresh || (c.refreshing && c.known) {
		m, ok = c.mem, c.known
		c.mu.Unlock()
		return m, ok
	}
	c.refreshing = true
	c.mu.Unlock()

	got, err := c.cfg.ReadMemory(ctx)

	c.mu.Lock()
	defer c.mu.Unlock()
	c.refreshing, c.tried, c.triedAt = false, true, now
	if err != nil {
		// Keep the last reading; try again after the TTL.
		if !c.failing {
			if c.known {
				c.log.Warn("Redis memory not read (INFO memory): the memory guard uses its last reading", "err", err)
			} else {
				c.log.Warn("Redis memory cannot be read (INFO memory): the memory guard refuses nothing until it can", "err", err)
			}
			c.failing = true
		}
		return c.mem, c.known
	}
	c.failing = false
	got.At = now
	c.mem, c.known = got, true
	c.noteRefusals(got)
	return got, true
}

// noteRefusals logs when a reading starts or stops refusing a class, so
// the operator hears of a filling Redis before it is full.
func (c *Controller) noteRefusals(m Memory) {
	refusing := c.Refusing(m)
	if len(refusing) == c.refusing {
		return
	}
	names := make([]string, len(refusing))
	for i, cl := range refusing {
		names[i] = cl.String()
	}
	attrs := []any{"used_bytes", m.Used, "max_bytes", m.Max, "used_ratio", fmt.Sprintf("%.3f", m.Ratio()), "refusing", names}
	if len(refusing) > c.refusing {
		c.log.Warn("Redis memory is filling up: requests of these classes are refused", attrs...)
	} else {
		c.log.Info("Redis memory has room again: fewer classes are refused", attrs...)
	}
	c.refusing = len(refusing)
}

// infoMemory reads INFO memory; on Cluster, of the fullest primary.
func (c *Controller) infoMemory(ctx context.Context) (Memory, error) {
	cc, ok := autopipe.Underlying(c.rdb).(*redis.ClusterClient)
	if !ok {
		return readInfoMemory(ctx, c.rdb)
	}
	var mu sync.Mutex
	var worst Memory
	err := cc.ForEachMaster(ctx, func(ctx context.Context, n *redis.Client) error {
		m, err := readInfoMemory(ctx, n)
		if err != nil {
			return err
		}
		mu.Lock()
		defer mu.Unlock()
		if m.Ratio() > worst.Ratio() || (worst.Max == 0 && m.Used > worst.Used) {
			worst = m
		}
		return nil
	})
	return worst, err
}

func readInfoMemory(ctx context.Context, rdb redis.Cmdable) (Memory, error) {
	info, err := rdb.Info(ctx, "memory").Result()
	if err != nil {
		return Memory{}, err
	}
	return ParseInfoMemory(info)
}

// ParseInfoMemory reads used_memory and maxmemory from the text of INFO
// memory.
func ParseInfoMemory(info string) (Memory, error) {
	var m Memory
	seen := 0
	sc := bufio.NewScanner(strings.NewReader(info))
	for sc.Scan() {
		k, v, ok := strings.Cut(strings.TrimSpace(sc.Text()), ":")
		if !ok {
			continue
		}
		var dst *int64
		switch k {
		case "used_memory":
			dst = &m.Used
		case "maxmemory":
			dst = &m.Max
		default:
			continue
		}
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return Memory{}, fmt.Errorf("INFO memory: %s=%q", k, v)
		}
		*dst = n
		seen++
	}
	if seen < 2 {
		return Memory{}, errors.New("INFO memory: no used_memory and maxmemory")
	}
	return m, nil
}
