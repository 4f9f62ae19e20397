package service

import (
	"github.com/redis/go-redis/v9"

	"github.com/patientmsg/gateway/internal/autopipe"
)

// hotClient is the batching client the service's parts share while it is
// built; Close (on a failed build) closes it and the connection pool under
// it. A running Service closes them at Shutdown.
type hotClient struct {
	*autopipe.Client
	raw redis.UniversalClient
}

func (c *hotClient) Close() error {
	_ = c.Client.Close()
	return c.raw.Close()
}

// AddBatchedHook adds a hook to the client that batches the API's and
// workers' commands: it sees each command as its caller runs it, where a
// hook on Redis (the Service's Redis) sees the batches.
func (s *Service) AddBatchedHook(h redis.Hook) { s.hot.AddHook(h) }
