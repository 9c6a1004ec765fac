// The peer wire: frames (`FrameDecoder.decodeFrame`), the handshake and every consensus message
// (`MessageCodec`). Each decodes or throws `WireError`, never traps; whatever decodes encodes
// to a frame that decodes to the same message.
//
// Input: see `runStreamFuzzer`.
import FuzzSupport
import MultiPaxos
import NIOCore
import WireFuzzSupport
@testable import PaxosTransport

func check(_ frame: InboundFrame) {
    var body = frame.payload
    switch frame.type {
    case .hello, .welcome, .auth, .ready, .refuse:
        guard let message = try? HandshakeMessage.decode(type: frame.type, body: &body) else { return }
        if case .hello(let hello) = message, hello.version != WireVersion.current { return }  // not parsed past the version
        let back = reframe(.handshake(message))
        var again = back.payload
        fuzzCheck(back.type == frame.type, "handshake frame type \(back.type), was \(frame.type)")
        fuzzCheck((try? HandshakeMessage.decode(type: back.type, body: &again)) == message, "handshake round trip of \(message)")
    case .envelope:
        guard let envelope = try? MessageCodec.decode(&body) else { return }
        let back = reframe(.envelope(envelope))
        var again = back.payload
        fuzzCheck(back.payload.readableBytes == MessageCodec.encodedSize(envelope), "encodedSize of \(envelope)")
        fuzzCheck((try? MessageCodec.decode(&again)) == envelope, "envelope round trip of \(envelope)")
    default:
        return
    }
}

runStreamFuzzer(check)
