import MultiPaxos
import NIOCore
@testable import PaxosTransport
import Testing

/// The client protocol's version-4 requests (`members`, `transferLeadership`) and their answers.
@Suite struct MembershipCodecTests {
    static let members = [
        MemberStatus(id: 1, peerAddress: PeerAddress(host: "127.0.0.1", port: 7101), clientAddress: PeerAddress(host: "127.0.0.1", port: 8101),
                     role: .leader, isSelf: true, acknowledgedThrough: 12, chosenThrough: 11),
        MemberStatus(id: 2, peerAddress: PeerAddress(host: "::1", port: 7102), clientAddress: PeerAddress(host: "db-2.example", port: 65535),
                     role: .follower, isSelf: false, acknowledgedThrough: 0, chosenThrough: nil),
        MemberStatus(id: .max, peerAddress: PeerAddress(host: "", port: 0), clientAddress: PeerAddress(host: "ü", port: 1),
                     role: MemberRole(rawValue: 3), isSelf: false),
    ]

    // Round trips and truncations: ClientProtocolCodecTests, whose lists hold these requests
    // and responses too.

    /// Size hints cover the encoding (a hint too small costs a reallocation per frame).
    @Test func sizeHintsCoverTheEncoding() {
        for response in [ClientResponse.members(Self.members), .members([]), .leadershipTransferred(leaderID: 2)] {
            let frame = ClientResponseFrame(id: 1, response: response)
            var body = ByteBuffer()
            frame.encode(into: &body)
            #expect(body.readableBytes <= frame.encodedSizeHint, "\(response)")
        }
    }

    /// WIRE.md's layouts byte for byte.
    @Test func version4Layout() throws {
        var transfer = ByteBuffer()
        ClientRequestFrame(id: 1, request: .transferLeadership(to: 3)).encode(into: &transfer)
        #expect(Array(transfer.readableBytesView) == [0, 0, 0, 0, 0, 0, 0, 1, 6, 0, 0, 0, 3])
        var members = ByteBuffer()
        ClientRequestFrame(id: 1, request: .members).encode(into: &members)
        #expect(Array(members.readableBytesView) == [0, 0, 0, 0, 0, 0, 0, 1, 5])
        var list = ByteBuffer()
        let one = MemberStatus(id: 2, peerAddress: PeerAddress(host: "h", port: 7102), clientAddress: PeerAddress(host: "h", port: 8102),
                               role: .follower, isSelf: false, acknowledgedThrough: 9, chosenThrough: nil)
        ClientResponseFrame(id: 1, response: .members([one])).encode(into: &list)
        #expect(Array(list.readableBytesView) == [
            0, 0, 0, 0, 0, 0, 0, 1,         // response id
            7,                              // kind: members
            0, 0, 0, 1,                     // one member
            0, 0, 0, 2,                     // id 2
            0, 1, 0x68, 0x1B, 0xBE,         // peer address "h":7102
            0, 1, 0x68, 0x1F, 0xA6,         // client address "h":8102
            2,                              // role: follower
            0,                              // not the answering replica
            1, 0, 0, 0, 0, 0, 0, 0, 9,      // acknowledged through 9
            0,                              // chosen through unknown
        ])
        var done = ByteBuffer()
        ClientResponseFrame(id: 1, response: .leadershipTransferred(leaderID: 3)).encode(into: &done)
        #expect(Array(done.readableBytesView) == [0, 0, 0, 0, 0, 0, 0, 1, 8, 0, 0, 0, 3])
    }

    /// Malformed bodies throw (the connection is then closed and counted), never trap: trailing
    /// bytes, a bool that is not 0 or 1, a forged member count, a cut-off target.
    @Test func malformedBodiesThrow() throws {
        let malformed: [(String, [UInt8], Bool)] = [
            ("members request with a body", [0, 0, 0, 0, 0, 0, 0, 1, 5, 0], true),
            ("transfer cut short", [0, 0, 0, 0, 0, 0, 0, 1, 6, 0, 0, 3], true),
            ("transfer with trailing bytes", [0, 0, 0, 0, 0, 0, 0, 1, 6, 0, 0, 0, 3, 0], true),
            ("request kind 7 does not exist", [0, 0, 0, 0, 0, 0, 0, 1, 7], true),
            ("forged member count", [0, 0, 0, 0, 0, 0, 0, 1, 7, 0xFF, 0xFF, 0xFF, 0xFF], false),
            ("isSelf is 2", [0, 0, 0, 0, 0, 0, 0, 1, 7, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 1, 0, 0, 0, 1, 1, 2, 0, 0], false),
            ("transferred cut short", [0, 0, 0, 0, 0, 0, 0, 1, 8, 0, 0, 3], false),
        ]
        for (what, bytes, isRequest) in malformed {
            var buffer = ByteBuffer(bytes: bytes)
            if isRequest {
                #expect(throws: WireError.self, "\(what)") { try ClientRequestFrame.decode(&buffer) }
            } else {
                #expect(throws: WireError.self, "\(what)") { try ClientResponseFrame.decode(&buffer) }
            }
        }
    }

    /// A role this build does not know decodes as its number, so a newer server's roles
    /// (learners) do not make an older client fail.
    @Test func unknownRoleIsKeptNotRefused() {
        #expect(MemberRole(rawValue: 3).description == "role 3")
        #expect(MemberRole.leader.description == "leader" && MemberRole.follower.description == "follower")
    }
}
