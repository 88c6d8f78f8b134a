/**
 * Tells cashloop when an Opportunity becomes Closed Won (on insert, or on an update from
 * another stage). Bulk-safe: the whole batch goes to one Queueable job, which makes the
 * callouts; see CashloopEvents.
 */
trigger OpportunityClosedWon on Opportunity (after insert, after update) {
    CashloopEvents.onAfterSave(
        (List<Opportunity>) Trigger.new,
        Trigger.isUpdate ? (Map<Id, Opportunity>) Trigger.oldMap : null
    );
}
