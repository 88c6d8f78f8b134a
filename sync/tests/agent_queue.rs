//! The agent command queue on SQLite and (with CASHLOOP_TEST_POSTGRES_URL) PostgreSQL.

use db::both_backends;
use serde_json::json;
use sync::agent_queue::{self, Outcome, QueueError};

both_backends!(
    enqueue_is_idempotent_and_lease_is_exclusive,
    |t| async move {
        let db = &t.db;
        let a = agent_queue::enqueue(db, "s100", "upsert_customer", &json!({"n": 1}), "k1")
            .await
            .unwrap();
        let again = agent_queue::enqueue(db, "s100", "upsert_customer", &json!({"n": 2}), "k1")
            .await
            .unwrap();
        assert_eq!(a, again, "same key, same command");
        let b = agent_queue::enqueue(db, "s100", "create_sales_order", &json!({}), "k2")
            .await
            .unwrap();
        agent_queue::enqueue(db, "other", "read_items", &json!({}), "k3")
            .await
            .unwrap();
        assert!(matches!(
            agent_queue::enqueue(db, "s100", "drop_tables", &json!({}), "k4").await,
            Err(QueueError::UnknownKind(_))
        ));

        let first = agent_queue::lease(db, "s100", 60_000)
            .await
            .unwrap()
            .unwrap();
        assert_eq!((first.id, first.deliveries), (a, 1));
        assert_eq!(first.payload, json!({"n": 1}));
        let second = agent_queue::lease(db, "s100", 60_000)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(second.id, b);
        assert!(
            agent_queue::lease(db, "s100", 60_000)
                .await
                .unwrap()
                .is_none()
        );
    }
);

both_backends!(
    expired_lease_redelivers_and_results_are_idempotent,
    |t| async move {
        let db = &t.db;
        let id = agent_queue::enqueue(db, "s100", "create_sales_order", &json!({}), "so-1")
            .await
            .unwrap();
        let c = agent_queue::lease(db, "s100", 1).await.unwrap().unwrap();
        assert_eq!(c.id, id);
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        let again = agent_queue::lease(db, "s100", 60_000)
            .await
            .unwrap()
            .unwrap();
        assert_eq!((again.id, again.deliveries), (id, 2));

        let done = Outcome::Done(json!({"sales_order_no": "0000042"}));
        assert!(agent_queue::finish(db, "s100", id, &done).await.unwrap());
        // The late result of the first delivery is accepted and ignored.
        assert!(
            !agent_queue::finish(db, "s100", id, &Outcome::Failed("late".into()))
                .await
                .unwrap()
        );
        let state = agent_queue::get(db, id).await.unwrap().unwrap();
        assert_eq!(state.status, "done");
        assert_eq!(state.result, Some(json!({"sales_order_no": "0000042"})));
        assert_eq!(state.error, None);
        assert!(
            agent_queue::lease(db, "s100", 60_000)
                .await
                .unwrap()
                .is_none()
        );
        // Another agent cannot finish it, nor an unknown command.
        assert!(matches!(
            agent_queue::finish(db, "other", id, &done).await,
            Err(QueueError::NotFound(_))
        ));
        assert!(matches!(
            agent_queue::finish(db, "s100", 999_999, &done).await,
            Err(QueueError::NotFound(_))
        ));
    }
);
