package bus

import (
	"encoding/json"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// Sender is who sent a message, as the server knows it.
type Sender struct {
	// ClientID is the id of the sending connection on its server.
	ClientID uint64
	// Server is the name of the server the connection is on: in a cluster
	// of brokers, not always the one that received the message.
	Server string
}

// SenderOf returns who sent msg, a message that reached the internal
// account on one of ServerConfig.Services. The server sets that identity
// on the way in and replaces whatever the sender put in its place, so it
// cannot be forged. ok is false for a message that did not come that way.
func SenderOf(msg *nats.Msg) (s Sender, ok bool) {
	h := msg.Header.Get(server.ClientInfoHdr)
	if h == "" {
		return Sender{}, false
	}
	var ci server.ClientInfo
	if err := json.Unmarshal([]byte(h), &ci); err != nil || ci.ID == 0 {
		return Sender{}, false
	}
	return Sender{ClientID: ci.ID, Server: ci.Server}, true
}
