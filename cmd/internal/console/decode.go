package console

import (
	"fmt"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"baton/messages"
)

// readableJSON shows every field under its .proto name.
var readableJSON = protojson.MarshalOptions{UseProtoNames: true, EmitUnpopulated: true}

// Decode renders the body of a message on subject as one line of JSON, as
// `node decode` prints it for `nats sub --translate`. A JSON request body is
// returned as it is.
func Decode(subject string, data []byte) ([]byte, error) {
	if subject == messages.SubjectExec && messages.IsJSON(data) {
		return data, nil
	}
	m, ok := messages.ForSubject(subject)
	if !ok {
		return nil, fmt.Errorf("decode: baton sends no message body on subject %q (known: node.register, node.heartbeat, node.deregister, master.current, exec.request, exec.status.*)", subject)
	}
	if err := proto.Unmarshal(data, m); err != nil {
		return nil, fmt.Errorf("decode %s body as %s: %w", subject, m.ProtoReflect().Descriptor().Name(), err)
	}
	return readableJSON.Marshal(m)
}
