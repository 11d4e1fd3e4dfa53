package client

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/modelreg/modelreg/pkg/wire"
)

// RobotOptions describe a robot account to create.
type RobotOptions struct {
	// Repositories are the patterns it may act on (team/* one segment,
	// team/** any depth); Actions what it may do there (pull, push, sign,
	// delete, promote:STAGE, admin).
	Repositories []string
	Actions      []string
	Description  string
	// Expires is its life from now; 0 never expires.
	Expires time.Duration
}

// registryHost reads REGISTRY (HOST[:PORT]) for the commands about a
// whole registry.
func registryHost(host string) (string, error) {
	h := strings.TrimSuffix(strings.TrimPrefix(strings.TrimPrefix(host, "https://"), "http://"), "/")
	if h == "" || strings.Contains(h, "/") {
		return "", usage(fmt.Errorf("%q: name a registry (HOST[:PORT], e.g. localhost:5000)", host))
	}
	return h, nil
}

// CreateRobot creates a robot account on modelreg serve at host, for CI:
// its secret (in the result, shown once; kept by the server only as a
// hash) logs in as "robot$NAME" with modelreg login, oras login, docker
// login or crane auth login. Creating one needs admin on each of its
// repository patterns.
func (c *Client) CreateRobot(ctx context.Context, host, name string, o RobotOptions) (*wire.Robot, error) {
	h, err := registryHost(host)
	if err != nil {
		return nil, err
	}
	if len(o.Repositories) == 0 || len(o.Actions) == 0 {
		return nil, usage(fmt.Errorf("a robot needs --repo PATTERN and --actions (e.g. --repo 'team/*' --actions pull,push)"))
	}
	api, err := c.Server(ctx, h)
	if err != nil {
		return nil, fmt.Errorf("%s is not modelreg serve: robot accounts are modelreg serve's (%w)", h, err)
	}
	req := wire.RobotRequest{Name: name, Repositories: o.Repositories, Actions: o.Actions, Description: o.Description}
	if o.Expires > 0 {
		req.Expires = o.Expires.String()
	}
	rb, err := api.CreateRobot(ctx, req)
	if err != nil {
		return nil, err
	}
	return &rb, nil
}

// Robots lists the robot accounts of host that the caller administers.
func (c *Client) Robots(ctx context.Context, host string) ([]wire.Robot, error) {
	h, err := registryHost(host)
	if err != nil {
		return nil, err
	}
	api, err := c.Server(ctx, h)
	if err != nil {
		return nil, fmt.Errorf("%s is not modelreg serve: robot accounts are modelreg serve's (%w)", h, err)
	}
	return api.Robots(ctx)
}

// RevokeRobot revokes a robot account: its secret and every token issued
// to it stop working at once (the server checks the account on each
// request).
func (c *Client) RevokeRobot(ctx context.Context, host, name string) (*wire.Robot, error) {
	h, err := registryHost(host)
	if err != nil {
		return nil, err
	}
	api, err := c.Server(ctx, h)
	if err != nil {
		return nil, fmt.Errorf("%s is not modelreg serve: robot accounts are modelreg serve's (%w)", h, err)
	}
	rb, err := api.RevokeRobot(ctx, name)
	if err != nil {
		return nil, err
	}
	return &rb, nil
}
