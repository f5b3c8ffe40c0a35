-- The attempt indexes of the history queries: one row per attempt node (its body stays in
-- graph_nodes), written by the same statement as the node. Attempts by creation, optionally of
-- one target and/or in one status; failures (failed or timed out) by the seq that ended them,
-- optionally of one target; a task's attempts by creation.
CREATE TABLE graph_attempts (
    node_id     text   COLLATE "C" PRIMARY KEY,
    target_id   text   COLLATE "C" NOT NULL,
    task_node   text   COLLATE "C" NOT NULL,
    status      text   COLLATE "C" NOT NULL,
    created_seq bigint NOT NULL,
    ended_seq   bigint
);
CREATE INDEX graph_attempts_created ON graph_attempts (created_seq);
CREATE INDEX graph_attempts_target ON graph_attempts (target_id, created_seq);
CREATE INDEX graph_attempts_status ON graph_attempts (status, created_seq);
CREATE INDEX graph_attempts_target_status ON graph_attempts (target_id, status, created_seq);
CREATE INDEX graph_attempts_task ON graph_attempts (task_node, created_seq);
CREATE INDEX graph_attempts_failures ON graph_attempts (ended_seq)
    WHERE status IN ('failed', 'timed_out');
CREATE INDEX graph_attempts_target_failures ON graph_attempts (target_id, ended_seq)
    WHERE status IN ('failed', 'timed_out');

INSERT INTO graph_attempts (node_id, target_id, task_node, status, created_seq, ended_seq)
SELECT node_id,
       body->>'target_id',
       'task:' || (body->>'target_id') || '/' || (body->>'task_id'),
       body->>'status',
       (body->'meta'->>'created_seq')::bigint,
       (body->>'ended_seq')::bigint
FROM graph_nodes
WHERE kind = 'Attempt';
