package wire

import "time"

// RobotRequest creates a robot account (POST robots).
type RobotRequest struct {
	Name         string   `json:"name"`
	Repositories []string `json:"repositories"`
	Actions      []string `json:"actions"`
	Description  string   `json:"description,omitempty"`
	// Expires is the account's life from now, as a Go duration ("720h");
	// "" never expires.
	Expires string `json:"expires,omitempty"`
}

// Robot is a robot account as the model API lists it (never its secret).
type Robot struct {
	Name string `json:"name"`
	// Username is what to log in as: "robot$" + Name.
	Username     string    `json:"username"`
	Repositories []string  `json:"repositories"`
	Actions      []string  `json:"actions"`
	Description  string    `json:"description,omitempty"`
	Created      time.Time `json:"created"`
	CreatedBy    string    `json:"createdBy,omitempty"`
	Expires      time.Time `json:"expires,omitzero"`
	Revoked      time.Time `json:"revoked,omitzero"`
	LastUsed     time.Time `json:"lastUsed,omitzero"`
	// State is active, expired or revoked.
	State string `json:"state"`
	// Secret is set once, in the answer that creates the account: it is
	// kept only as a hash and cannot be shown again.
	Secret string `json:"secret,omitempty"`
}

// Robots lists robot accounts.
type Robots struct {
	Robots []Robot `json:"robots"`
}
